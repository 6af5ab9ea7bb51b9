package nspawn

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// readTrimmed reads a small file and trims surrounding white space.
func readTrimmed(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// procStat returns the state letter and parent PID of pid from /proc/<pid>/stat.
func procStat(pid int) (state byte, ppid int, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return f[0][0], ppid, nil
}

// pidsInProc lists the PIDs currently in /proc.
func pidsInProc() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}

// childrenOf lists the live children of ppid.
func childrenOf(ppid int) ([]int, error) {
	pids, err := pidsInProc()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		if state, pp, err := procStat(pid); err == nil && pp == ppid && state != 'Z' {
			out = append(out, pid)
		}
	}
	return out, nil
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	state, _, err := procStat(pid)
	return err == nil && state != 'Z'
}

// waitGone polls until pid is gone (or a zombie) or timeout passes.
func waitGone(pid int, timeout time.Duration) {
	for end := time.Now().Add(timeout); processAlive(pid) && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
}

// Leftovers reports what is left of booted nodes whose files live under dir (their sysroots
// and work dirs): processes whose root, working directory or command line is under dir,
// mounts under dir or /run/systemd/nspawn in this and PID 1's mount namespace, and unix
// sockets bound under dir. Nil means nothing is left.
func Leftovers(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("nspawn: leftovers: %w", err)
	}
	var found []string
	under := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	pids, err := pidsInProc()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if pid == os.Getpid() || !processAlive(pid) {
			continue
		}
		root, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if under(root) || under(cwd) || strings.Contains(string(cmdline), dir) {
			found = append(found, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
		}
	}
	for _, mi := range []string{"/proc/self/mountinfo", "/proc/1/mountinfo"} {
		mps, err := mountPoints(mi)
		if err != nil {
			return err
		}
		for _, mp := range mps {
			if under(mp) || strings.HasPrefix(mp, "/run/systemd/nspawn") {
				found = append(found, fmt.Sprintf("mount %s (%s)", mp, mi))
			}
		}
	}
	socks, err := unixSocketPaths()
	if err != nil {
		return err
	}
	for _, p := range socks {
		if under(p) {
			found = append(found, "unix socket "+p)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("nspawn: left behind under %s:\n  %s", dir, strings.Join(found, "\n  "))
	}
	return nil
}

// mountPoints lists the mount points of a mountinfo file.
func mountPoints(mountinfo string) ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountinfo, err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 5 {
			out = append(out, unescapeMountinfo(fs[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountinfo, err)
	}
	return out, nil
}

// unixSocketPaths lists the bound paths of unix sockets in this network namespace.
func unixSocketPaths() ([]string, error) {
	f, err := os.Open("/proc/net/unix")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading /proc/net/unix: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 8 && strings.HasPrefix(fs[7], "/") {
			out = append(out, fs[7])
		}
	}
	return out, sc.Err()
}
