package logging_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"layerd.dev/layerd/pkg/logging"
)

func TestNew(t *testing.T) {
	t.Run("json_lines_carry_the_callers_fields", func(t *testing.T) {
		var buf bytes.Buffer
		log := logging.New(logging.Options{Format: logging.FormatJSON, Level: zapcore.InfoLevel, Out: &buf})
		log.Info("staging", zap.String("node", "n1"), zap.String("phase", "Staging"))
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("not JSON: %q: %v", buf.String(), err)
		}
		if rec["msg"] != "staging" || rec["node"] != "n1" || rec["phase"] != "Staging" || rec["ts"] == nil {
			t.Fatalf("unexpected record %v", rec)
		}
	})
	t.Run("drops_records_below_the_level", func(t *testing.T) {
		var buf bytes.Buffer
		log := logging.New(logging.Options{Format: logging.FormatConsole, Level: zapcore.WarnLevel, Out: &buf})
		log.Info("quiet")
		if buf.Len() != 0 {
			t.Fatalf("info record written at warn level: %q", buf.String())
		}
	})
	t.Run("rejects_an_unknown_format", func(t *testing.T) {
		if _, err := logging.ParseFormat("xml"); err == nil {
			t.Fatal("ParseFormat(xml) succeeded")
		}
	})
}
