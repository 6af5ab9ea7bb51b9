package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// knobs are the server's fault knobs the control file drives.
type knobs interface {
	FailNextTransaction(message string)
	StallTransactions()
	ReleaseTransactions()
	CrashDuringNextTransaction()
	FailNextCallsWithNoReply(n int)
}

// serveControl applies the control file on every SIGUSR1 until ctx ends.
func serveControl(ctx context.Context, path string, k knobs, log *zap.Logger) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
			data, err := os.ReadFile(path)
			if err != nil {
				log.Error("reading control file", zap.String("path", path), zap.Error(err))
				continue
			}
			if err := applyControl(string(data), k); err != nil {
				log.Error("control file", zap.String("path", path), zap.Error(err))
			}
		}
	}
}

// applyControl runs each line: fail-next <message> | stall | release | crash | noreply <n>.
func applyControl(text string, k knobs) error {
	for _, line := range strings.Split(text, "\n") {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch cmd {
		case "":
		case "fail-next":
			k.FailNextTransaction(strings.TrimSpace(arg))
		case "stall":
			k.StallTransactions()
		case "release":
			k.ReleaseTransactions()
		case "crash":
			k.CrashDuringNextTransaction()
		case "noreply":
			n, err := strconv.Atoi(strings.TrimSpace(arg))
			if err != nil || n < 0 {
				return fmt.Errorf("noreply wants a count, got %q", arg)
			}
			k.FailNextCallsWithNoReply(n)
		default:
			return fmt.Errorf("unknown control command %q", cmd)
		}
	}
	return nil
}

// rebootHook records a reboot request in <runDir>/rpm-ostreed-reboot-requested and runs
// command (sh -c) when set.
func rebootHook(runDir, command string, requested chan<- struct{}, log *zap.Logger) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		defer func() {
			select {
			case requested <- struct{}{}:
			default:
			}
		}()
		marker := filepath.Join(runDir, "rpm-ostreed-reboot-requested")
		if err := os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
			return fmt.Errorf("recording reboot request: %w", err)
		}
		log.Info("reboot requested", zap.String("marker", marker))
		if command == "" {
			return nil
		}
		out, err := exec.CommandContext(ctx, "sh", "-c", command).CombinedOutput()
		if err != nil {
			return fmt.Errorf("reboot command %q: %w: %s", command, err, out)
		}
		return nil
	}
}
