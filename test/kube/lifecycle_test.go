package kube_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"layerd.dev/layerd/test/kube"
)

func TestLifecycle(t *testing.T) {
	cluster(t) // the same prerequisites as the shared cluster
	ctx := testContext(t)
	workDir := t.TempDir()
	c, err := kube.Start(ctx, kube.Options{WorkDir: workDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	t.Logf("second cluster ready in %v", c.StartDuration)
	pids, ports := c.PIDs(), c.Ports()

	t.Run("every component listens on 127.0.0.1", func(t *testing.T) {
		if len(ports) != 4 || len(pids) != 3 {
			t.Fatalf("ports %v, pids %v; want 4 ports and 3 processes", ports, pids)
		}
		listening := loopbackListeners(t)
		for _, p := range ports {
			if !listening[p] {
				t.Errorf("nothing listens on 127.0.0.1:%d", p)
			}
		}
		held := childListeners(t, pids)
		if len(held) < len(ports) {
			t.Errorf("children hold %d listening sockets %v, want at least %d", len(held), held, len(ports))
		}
		for _, l := range held {
			if !strings.HasPrefix(l, "0100007F:") {
				t.Errorf("a child listens beyond loopback: %s", l)
			}
		}
	})

	t.Run("Stop leaves no child process or listener", func(t *testing.T) {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still exists (kill 0: %v)", pid, err)
			}
		}
		if left := processesInGroups(t, pids); len(left) > 0 {
			t.Errorf("processes left in the children's groups: %v", left)
		}
		listening := loopbackListeners(t)
		for _, p := range ports {
			if listening[p] {
				t.Errorf("port %d still listening after Stop", p)
			}
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second); err == nil {
				conn.Close()
				t.Errorf("port %d still accepts connections after Stop", p)
			}
		}
		if _, err := os.Stat(filepath.Join(workDir, "kube-apiserver.log")); err != nil {
			t.Errorf("a given WorkDir keeps its logs after Stop: %v", err)
		}
	})
}

func TestStartFailures(t *testing.T) {
	t.Run("a missing binary directory is a clear error", func(t *testing.T) {
		_, err := kube.Start(context.Background(), kube.Options{BinDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "binary missing") {
			t.Fatalf("got %v, want a missing-binary error", err)
		}
	})

	t.Run("a child that exits early fails Start with its log tail", func(t *testing.T) {
		bin := t.TempDir()
		for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
			script := "#!/bin/sh\necho \"boom from $0\" >&2\nexit 3\n"
			if err := os.WriteFile(filepath.Join(bin, b), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		began := time.Now()
		_, err := kube.Start(testContext(t), kube.Options{BinDir: bin, WorkDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "etcd exited early") || !strings.Contains(err.Error(), "boom from") {
			t.Fatalf("got %v, want an early-exit error with the log tail", err)
		}
		if d := time.Since(began); d > 10*time.Second {
			t.Errorf("Start took %v to notice the exit", d)
		}
	})
}

// loopbackListeners returns the TCP ports in LISTEN state on 127.0.0.1 (from /proc/net/tcp).
func loopbackListeners(t *testing.T) map[int]bool {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatalf("reading listeners: %v", err)
	}
	defer f.Close()
	out := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || fs[3] != "0A" { // 0A = TCP_LISTEN
			continue
		}
		addr, port, ok := strings.Cut(fs[1], ":")
		if !ok || addr != "0100007F" {
			continue
		}
		if p, err := strconv.ParseInt(port, 16, 32); err == nil {
			out[int(p)] = true
		}
	}
	return out
}

// processesInGroups lists processes whose process group is one of pgids.
func processesInGroups(t *testing.T, pgids []int) []string {
	t.Helper()
	want := map[int]bool{}
	for _, p := range pgids {
		want[p] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("reading /proc: %v", err)
	}
	var left []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		s := string(stat)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(rest) < 3 {
			continue
		}
		if pgrp, _ := strconv.Atoi(rest[2]); want[pgrp] {
			left = append(left, fmt.Sprintf("%d %s", pid, s[:strings.LastIndexByte(s, ')')+1]))
		}
	}
	return left
}

// childListeners returns the local addresses (hex, as in /proc/net/tcp) of every listening TCP
// socket the given processes hold.
func childListeners(t *testing.T, pids []int) []string {
	t.Helper()
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatalf("reading fds of %d: %v", pid, err)
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(inode, "]")] = true
			}
		}
	}
	var out []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatalf("reading %s: %v", table, err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) >= 10 && fs[3] == "0A" && inodes[fs[9]] {
				out = append(out, fs[1])
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("found no listening sockets of processes %v", pids)
	}
	return out
}
