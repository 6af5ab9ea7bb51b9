// Command box brings the node-in-a-box up for manual use (`make up`) and down (`make down`).
//
//	go run ./test/box up [--nodes N] [--dir DIR]   # start in the background, print how to reach it
//	go run ./test/box down [--dir DIR]             # stop it and remove everything it made
//
// `up` starts `box serve` detached; serve runs the world until SIGTERM and writes box.json
// (kubeconfig, registry, nodes) into DIR when ready.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"layerd.dev/layerd/test/harness"
)

// Info is what box.json holds.
type Info struct {
	PID        int        `json:"pid"`
	Kubeconfig string     `json:"kubeconfig"`
	Registry   string     `json:"registry"`
	BaseImage  string     `json:"baseImage"`
	PolicyPath string     `json:"policy"`
	Nodes      []NodeInfo `json:"nodes"`
}

// NodeInfo describes one node of the box.
type NodeInfo struct {
	Name       string `json:"name"`
	BusAddress string `json:"busAddress"`
	Sysroot    string `json:"sysroot"`
	RunDir     string `json:"runDir"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: box up|down|serve [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	nodes := fs.Int("nodes", 3, "number of nodes")
	dir := fs.String("dir", filepath.Join(os.TempDir(), "layerd-box"), "state directory")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "up":
		err = up(*dir, *nodes)
	case "down":
		err = down(*dir)
	case "serve":
		err = serve(*dir, *nodes)
	default:
		fmt.Fprintf(os.Stderr, "box: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "box:", err)
		os.Exit(1)
	}
}

func infoPath(dir string) string { return filepath.Join(dir, "box.json") }

func up(dir string, nodes int) error {
	if _, err := os.Stat(infoPath(dir)); err == nil {
		return fmt.Errorf("a box is already up in %s (make down first)", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(dir, "box.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(self, "serve", "--dir", dir, "--nodes", strconv.Itoa(nodes))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Minute)
	for {
		if b, err := os.ReadFile(infoPath(dir)); err == nil {
			var info Info
			if err := json.Unmarshal(b, &info); err != nil {
				return err
			}
			printInfo(info, dir)
			return nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "box.log"))
			return fmt.Errorf("the box failed to start: %v\n%s", err, b)
		case <-deadline:
			return errors.New("the box did not come up within 10 minutes")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printInfo(info Info, dir string) {
	fmt.Printf("node-in-a-box is up (pid %d, log %s)\n", info.PID, filepath.Join(dir, "box.log"))
	fmt.Printf("  export KUBECONFIG=%s\n", info.Kubeconfig)
	fmt.Printf("  registry:   %s (plain HTTP; base image %s)\n", info.Registry, info.BaseImage)
	fmt.Printf("  policy:     %s\n", info.PolicyPath)
	for _, n := range info.Nodes {
		fmt.Printf("  node %-8s bus %s\n             sysroot %s  run %s\n", n.Name, n.BusAddress, n.Sysroot, n.RunDir)
	}
	fmt.Println("  stop with: make down")
}

func serve(dir string, nodes int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	w, err := harness.New(startCtx, harness.Options{Nodes: nodes, Dir: filepath.Join(dir, "world"), Log: os.Stderr})
	cancel()
	if err != nil {
		return err
	}
	info := Info{PID: os.Getpid(), Kubeconfig: w.Kube.KubeconfigPath, Registry: w.Registry.Addr(),
		BaseImage: w.Base.Pinned, PolicyPath: w.Trust.PolicyPath}
	for _, n := range w.Nodes {
		info.Nodes = append(info.Nodes, NodeInfo{Name: n.Name, BusAddress: n.BusAddress(), Sysroot: n.Sysroot.Path, RunDir: n.RunDir})
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	tmp := infoPath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return errors.Join(err, w.Close())
	}
	if err := os.Rename(tmp, infoPath(dir)); err != nil {
		return errors.Join(err, w.Close())
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "box: stopping")
	err = w.Close()
	return errors.Join(err, os.Remove(infoPath(dir)), os.RemoveAll(filepath.Join(dir, "world")))
}

func down(dir string) error {
	b, err := os.ReadFile(infoPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("no box is up")
		return nil
	}
	if err != nil {
		return err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return fmt.Errorf("reading %s: %w", infoPath(dir), err)
	}
	if err := syscall.Kill(info.PID, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("box process %d is gone but %s remains; remove %s by hand", info.PID, infoPath(dir), dir)
		}
		return err
	}
	for i := 0; i < 600; i++ {
		if err := syscall.Kill(info.PID, 0); errors.Is(err, syscall.ESRCH) {
			fmt.Println("node-in-a-box stopped")
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "box.log"))
	return fmt.Errorf("box process %d still running after 60 s; log:\n%s", info.PID, strings.TrimSpace(string(b)))
}
