// Package systemd is layerd's one owner of systemd facilities: the journald logging core,
// sd_notify, and login1 inhibitors. Everything tolerates a host where PID 1 is not
// systemd: the journal core is simply not added and notify is a no-op.
package systemd

import (
	"fmt"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap/zapcore"
)

// JournalSender is the part of go-systemd's journal package the core uses.
type JournalSender interface {
	Send(message string, priority journal.Priority, vars map[string]string) error
}

// GoSystemdJournal sends through the native journald socket (/run/systemd/journal/socket).
type GoSystemdJournal struct{}

// Send implements JournalSender.
func (GoSystemdJournal) Send(m string, p journal.Priority, vars map[string]string) error {
	return journal.Send(m, p, vars)
}

// JournalAvailable reports whether the journald socket exists.
func JournalAvailable() bool { return journal.Enabled() }

// NewJournalCore returns a zap core writing each record to journald with SYSLOG_IDENTIFIER
// set to identifier and every field as an upper-cased journal field prefixed with LAYERD_
// (node → LAYERD_NODE, phase → LAYERD_PHASE, digest → LAYERD_DIGEST), so that
// `journalctl -t layerd LAYERD_PHASE=Draining` works.
func NewJournalCore(s JournalSender, identifier string, level zapcore.LevelEnabler) zapcore.Core {
	return &journalCore{LevelEnabler: level, send: s, ident: identifier}
}

type journalCore struct {
	zapcore.LevelEnabler
	send   JournalSender
	ident  string
	fields []zapcore.Field
}

func (c *journalCore) With(fs []zapcore.Field) zapcore.Core {
	cp := *c
	cp.fields = append(append([]zapcore.Field{}, c.fields...), fs...)
	return &cp
}

func (c *journalCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *journalCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field{}, c.fields...), fs...) {
		f.AddTo(enc)
	}
	vars := map[string]string{"SYSLOG_IDENTIFIER": c.ident}
	for k, v := range enc.Fields {
		vars[journalField(k)] = fmt.Sprint(v)
	}
	if e.LoggerName != "" {
		vars["LAYERD_LOGGER"] = e.LoggerName
	}
	if err := c.send.Send(e.Message, priority(e.Level), vars); err != nil {
		return fmt.Errorf("writing to journald: %w", err)
	}
	return nil
}

func (c *journalCore) Sync() error { return nil }

// journalField maps a zap key to a valid journal field name: upper case, [A-Z0-9_], LAYERD_ prefix.
func journalField(k string) string {
	var b strings.Builder
	b.WriteString("LAYERD_")
	for _, r := range strings.ToUpper(k) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func priority(l zapcore.Level) journal.Priority {
	switch {
	case l >= zapcore.DPanicLevel:
		return journal.PriCrit
	case l >= zapcore.ErrorLevel:
		return journal.PriErr
	case l >= zapcore.WarnLevel:
		return journal.PriWarning
	case l >= zapcore.InfoLevel:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}
