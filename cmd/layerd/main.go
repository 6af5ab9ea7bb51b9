// Command layerd is the node agent that applies layered OS images. main only wires: it builds the
// root command and maps errors to exit codes (0 ok, 1 failure, 2 bad usage).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap/zapcore"

	"layerd.dev/layerd/pkg/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := logging.New(logging.Options{Format: logging.FormatConsole, Level: zapcore.InfoLevel, Out: os.Stderr})
	err := newRootCmd(os.Stdout, os.Stderr, log).ExecuteContext(ctx)
	_ = log.Sync() // stderr cannot be synced on every platform; nothing to report
	stop()
	os.Exit(exitCode(err))
}

// exitCode maps an error returned by a command to the documented exit code.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "layerd:", err)
		return 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "layerd:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "layerd:", err)
	return 1
}
