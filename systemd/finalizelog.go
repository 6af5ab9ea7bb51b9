package systemd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// FinalizeUnit is the unit that finalizes a staged ostree deployment at shutdown (its ExecStop
// runs `ostree admin finalize-staged`).
const FinalizeUnit = "ostree-finalize-staged.service"

// msgUnitResult is journald's MESSAGE_ID of systemd's "<unit>: Failed with result '…'."
// (SD_MESSAGE_UNIT_FAILURE_RESULT); its entry carries UNIT_RESULT.
const msgUnitResult = "d9b373ed55a64feb8242e02dbe79a49c"

// FinalizeLog tells why the previous boot's finalization of a staged deployment failed.
type FinalizeLog interface {
	// PreviousBootFinalizeError is the previous boot's finalize error as one line, "" when
	// the finalization did not fail (or the journal does not reach back to that boot).
	PreviousBootFinalizeError(ctx context.Context) (string, error)
}

// Runner runs a command and returns its standard output; the error carries its standard error.
type Runner interface {
	Output(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Output implements Runner.
func (ExecRunner) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// JournalctlFinalizeLog reads the host's persistent journal with journalctl --directory: the
// DaemonSet pod sees it at <host-root>/var/log/journal. A host with a volatile journal
// (/run/log/journal only) keeps no previous boot: the answer is then always "".
type JournalctlFinalizeLog struct {
	dir string
	run Runner
}

var _ FinalizeLog = (*JournalctlFinalizeLog)(nil)

// NewJournalctlFinalizeLog reads the journal files under journalDir (the host's
// /var/log/journal) with the journalctl that run finds.
func NewJournalctlFinalizeLog(journalDir string, run Runner) (*JournalctlFinalizeLog, error) {
	if journalDir == "" {
		return nil, errors.New("finalize log: empty journal directory")
	}
	if run == nil {
		return nil, errors.New("finalize log: nil runner")
	}
	return &JournalctlFinalizeLog{dir: journalDir, run: run}, nil
}

// PreviousBootFinalizeError reads FinalizeUnit's entries of the boot before the journal's
// last one (the running boot). The finalization failed when systemd recorded a result other
// than success for the unit, or the unit's own output has an error line; the answer is the
// error lines of ostree (`error: …`) and of anything at priority warning or worse, then the
// unit's result, joined with "; ".
func (f *JournalctlFinalizeLog) PreviousBootFinalizeError(ctx context.Context) (string, error) {
	if _, err := os.Stat(f.dir); errors.Is(err, os.ErrNotExist) {
		return "", nil // no persistent journal
	}
	boots, err := f.journalctl(ctx, "--list-boots")
	if err != nil {
		return "", fmt.Errorf("reading the previous boot's finalization: %w", err)
	}
	if countLines(boots) < 2 {
		return "", nil // the journal starts with the running boot
	}
	out, err := f.journalctl(ctx, "--boot=-1", "--unit="+FinalizeUnit, "--output=json", "--all") // --all: long fields too
	if err != nil {
		return "", fmt.Errorf("reading the previous boot's finalization: %w", err)
	}
	return finalizeError(out)
}

func (f *JournalctlFinalizeLog) journalctl(ctx context.Context, args ...string) ([]byte, error) {
	return f.run.Output(ctx, "journalctl", append([]string{"--directory=" + f.dir, "--no-pager", "--quiet"}, args...)...)
}

// finalizeError picks the failure out of the unit's entries (journalctl -o json, one per line).
func finalizeError(out []byte) (string, error) {
	var lines []string
	result := ""
	failedOutput := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	for sc.Scan() {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var e journalEntry
		if json.Unmarshal(raw, &e) != nil {
			// A field journalctl wrote as an array (several values, or not UTF-8): this entry
			// is not one the finalize error is read from; the others still are.
			continue
		}
		msg := strings.TrimSpace(e.message())
		if e.MessageID == msgUnitResult && e.UnitResult != "" && e.UnitResult != "success" {
			result = "unit result: " + e.UnitResult
			continue
		}
		own := e.SystemdUnit == FinalizeUnit // the unit's own output, not systemd's about it
		isErr := own && strings.HasPrefix(strings.ToLower(msg), "error:")
		if isErr {
			failedOutput = true
		}
		if msg != "" && (isErr || (own && e.priority() <= 4)) {
			lines = append(lines, msg)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading the journal entries of %s: %w", FinalizeUnit, err)
	}
	if result == "" && !failedOutput {
		return "", nil
	}
	if result != "" {
		lines = append(lines, result)
	}
	return strings.Join(lines, "; "), nil
}

// journalEntry holds the fields of `journalctl -o json` the finalize log reads. MESSAGE is a
// string, or an array of bytes when it is not valid UTF-8.
type journalEntry struct {
	Message     json.RawMessage `json:"MESSAGE"`
	Priority    string          `json:"PRIORITY"`
	MessageID   string          `json:"MESSAGE_ID"`
	UnitResult  string          `json:"UNIT_RESULT"`
	SystemdUnit string          `json:"_SYSTEMD_UNIT"`
}

func (e journalEntry) message() string {
	var s string
	if json.Unmarshal(e.Message, &s) == nil {
		return s
	}
	var b []byte
	var ints []int
	if json.Unmarshal(e.Message, &ints) == nil {
		for _, i := range ints {
			b = append(b, byte(i))
		}
	}
	return string(b)
}

// priority is the syslog priority (7, debug, when missing).
func (e journalEntry) priority() int {
	p, err := strconv.Atoi(e.Priority)
	if err != nil {
		return 7
	}
	return p
}

func countLines(b []byte) int {
	n := 0
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			n++
		}
	}
	return n
}
