package systemd_test

import (
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"layerd.dev/layerd/systemd"
)

type record struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

type fakeJournal struct{ recs []record }

func (f *fakeJournal) Send(m string, p journal.Priority, v map[string]string) error {
	f.recs = append(f.recs, record{m, p, v})
	return nil
}

var _ systemd.JournalSender = (*fakeJournal)(nil)

func TestJournalCore(t *testing.T) {
	t.Run("fields_become_LAYERD_journal_fields_with_the_identifier", func(t *testing.T) {
		fj := &fakeJournal{}
		log := zap.New(systemd.NewJournalCore(fj, "layerd", zapcore.InfoLevel)).With(zap.String("node", "n1"))
		log.Warn("draining", zap.String("phase", "Draining"), zap.String("digest", "sha256:ab"), zap.Int("pods", 3))
		if len(fj.recs) != 1 {
			t.Fatalf("got %d records", len(fj.recs))
		}
		r := fj.recs[0]
		want := map[string]string{"SYSLOG_IDENTIFIER": "layerd", "LAYERD_NODE": "n1", "LAYERD_PHASE": "Draining",
			"LAYERD_DIGEST": "sha256:ab", "LAYERD_PODS": "3"}
		for k, v := range want {
			if r.vars[k] != v {
				t.Errorf("%s = %q, want %q (all: %v)", k, r.vars[k], v, r.vars)
			}
		}
		if r.msg != "draining" || r.pri != journal.PriWarning {
			t.Errorf("message %q priority %d", r.msg, r.pri)
		}
	})
	t.Run("levels_map_to_syslog_priorities_and_debug_is_filtered", func(t *testing.T) {
		fj := &fakeJournal{}
		log := zap.New(systemd.NewJournalCore(fj, "layerd", zapcore.InfoLevel))
		log.Debug("d")
		log.Info("i")
		log.Error("e")
		if len(fj.recs) != 2 || fj.recs[0].pri != journal.PriInfo || fj.recs[1].pri != journal.PriErr {
			t.Fatalf("records %+v", fj.recs)
		}
	})
	t.Run("odd_keys_are_made_valid_field_names", func(t *testing.T) {
		fj := &fakeJournal{}
		zap.New(systemd.NewJournalCore(fj, "layerd", zapcore.InfoLevel)).Info("x", zap.String("txn-path", "/"))
		if fj.recs[0].vars["LAYERD_TXN_PATH"] != "/" {
			t.Fatalf("vars %v", fj.recs[0].vars)
		}
	})
}
