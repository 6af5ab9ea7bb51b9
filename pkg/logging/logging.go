// Package logging is the one place where layerd builds its zap logger. Loggers are passed down
// explicitly; nothing below main reads a global logger.
package logging

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Format selects the encoder of the console/stderr core.
type Format string

const (
	FormatJSON    Format = "json"
	FormatConsole Format = "console"
)

// Options configure New.
type Options struct {
	Format Format
	Level  zapcore.Level
	Out    io.Writer
	// Extra cores (e.g. the journald core of package systemd) are teed with the main one.
	Extra []zapcore.Core
}

// ParseFormat validates a --log-format value.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case FormatJSON, FormatConsole:
		return Format(s), nil
	}
	return "", fmt.Errorf("unknown log format %q (want json or console)", s)
}

// New builds the logger. Field names are stable: ts, level, msg, logger, plus the caller's fields
// (node, phase, image, digest, txn).
func New(o Options) *zap.Logger {
	if o.Out == nil {
		panic("logging.New: Options.Out is nil")
	}
	cfg := zap.NewProductionEncoderConfig()
	cfg.TimeKey = "ts"
	cfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	var enc zapcore.Encoder
	if o.Format == FormatConsole {
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		enc = zapcore.NewJSONEncoder(cfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(o.Out)), o.Level)
	if len(o.Extra) > 0 {
		core = zapcore.NewTee(append([]zapcore.Core{core}, o.Extra...)...)
	}
	return zap.New(core)
}
