package kube

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Lazy is one control plane per test binary, started by the first test that needs it (so unit
// tests of the same package never start it) and stopped by Main.
//
//	var plane = &kube.Lazy{Options: kube.Options{NoControllerManager: true}}
//	func TestMain(m *testing.M) { plane.Main(m) }
//	func TestX(t *testing.T) { c := plane.Get(t) ... }
type Lazy struct {
	Options Options
	// Bench, when set, names the BENCH line printed with the start-up time.
	Bench string

	once sync.Once
	c    *Cluster
	err  error
}

// Get returns the control plane, starting it on first use; a start failure fails the test with
// the reason (never a skip).
func (l *Lazy) Get(t testing.TB) *Cluster {
	t.Helper()
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		l.c, l.err = Start(ctx, l.Options)
		if l.err == nil && l.Bench != "" {
			fmt.Printf("BENCH %s: %.2fs\n", l.Bench, l.c.StartDuration.Seconds())
		}
	})
	if l.err != nil {
		t.Fatalf("the test control plane did not start (needs $%s): %v", BinEnv, l.err)
	}
	return l.c
}

// Main runs the tests, stops the control plane if one was started, and exits.
func (l *Lazy) Main(m *testing.M) {
	code := m.Run()
	if l.c != nil {
		if err := l.c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
