// Command rpmostreed is the rpm-ostreed stand-in: it serves rpm-ostree's D-Bus API
// (test/rpmostreed/server) on a private system bus, backed by a libostree directory sysroot
// (test/rpmostreed/backend). It serves until SIGTERM or SIGINT.
//
//	go run ./test/rpmostreed --bus-address ADDR --sysroot DIR [--osname NAME]
//	    [--registries-d DIR] [--policy FILE] [--registries-conf FILE]
//	    [--txn-socket PATH] [--run-dir DIR] [--control FILE] [--on-reboot CMD]
//
// A deploy-family call with register-driver records the update driver in
// <run-dir>/rpm-ostree/update-driver.gv, as rpm-ostreed does in /run.
//
// Reboot requests (reboot: true, FinalizeDeployment) write <run-dir>/rpm-ostreed-reboot-requested
// and run --on-reboot with sh -c, after Finished reached the clients.
//
// Fault knobs: write commands, one per line, into the control file (default
// <run-dir>/rpm-ostreed.control) and send SIGUSR1:
//
//	fail-next <message>   the next transaction ends with Finished(false, <message>)
//	stall                 transactions wait after Start until "release" (Cancel still works)
//	release               let stalled transactions continue
//	crash                 the next transaction crashes the daemon (exit 70, no Finished)
//	noreply <n>           the next n Sysroot/OS method calls fail with NoReply (idle exit)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"

	"layerd.dev/layerd/test/rpmostreed/backend"
	"layerd.dev/layerd/test/rpmostreed/server"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "rpmostreed:", err)
		os.Exit(2)
	}
	err = run(cfg)
	if errors.Is(err, errRebooting) {
		os.Exit(rebootExitCode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rpmostreed:", err)
		os.Exit(1)
	}
}

// rebootExitCode is the exit code of --exit-on-reboot: the one systemd-nspawn uses when the
// machine inside asked to reboot. The harness reboots the node when it sees it.
const rebootExitCode = 133

var errRebooting = errors.New("reboot requested")

type config struct {
	exitOnReboot                           bool
	busAddress, sysroot, osname            string
	registriesD, policy, registriesConf    string
	txnSocket, runDir, control, onRebootSh string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("rpmostreed", flag.ContinueOnError)
	fs.StringVar(&c.busAddress, "bus-address", "", "D-Bus address of the (private) system bus (required)")
	fs.StringVar(&c.sysroot, "sysroot", "", "ostree sysroot directory (required)")
	fs.StringVar(&c.osname, "osname", "", "stateroot to manage (default: the booted one)")
	fs.StringVar(&c.registriesD, "registries-d", "", "containers-registries.d directory")
	fs.StringVar(&c.policy, "policy", "", "containers-policy.json")
	fs.StringVar(&c.registriesConf, "registries-conf", "", "containers-registries.conf")
	fs.StringVar(&c.txnSocket, "txn-socket", server.DefaultTxnSocketPath, "path of the p2p transaction socket")
	fs.StringVar(&c.runDir, "run-dir", "", "the node's /run (default: the directory of --txn-socket)")
	fs.StringVar(&c.control, "control", "", "fault control file read on SIGUSR1 (default <run-dir>/rpm-ostreed.control)")
	fs.StringVar(&c.onRebootSh, "on-reboot", "", "shell command run when a reboot is requested")
	fs.BoolVar(&c.exitOnReboot, "exit-on-reboot", false, "exit with code 133 once a requested reboot's transaction has finished (the directory tier's harness then reboots the node)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.busAddress == "" || c.sysroot == "" {
		return c, errors.New("--bus-address and --sysroot are required")
	}
	if c.runDir == "" {
		c.runDir = filepath.Dir(c.txnSocket)
	}
	if c.control == "" {
		c.control = filepath.Join(c.runDir, "rpm-ostreed.control")
	}
	return c, nil
}

func run(cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rebootRequested := make(chan struct{}, 1)
	log, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	b, err := backend.New(backend.Options{
		Sysroot: cfg.sysroot, OSName: cfg.osname, RunDir: cfg.runDir,
		RegistriesD: cfg.registriesD, PolicyPath: cfg.policy, RegistriesConf: cfg.registriesConf,
		Reboot: rebootHook(cfg.runDir, cfg.onRebootSh, rebootRequested, log),
	})
	if err != nil {
		return err
	}
	srv, err := server.Start(ctx, b, server.Options{
		BusAddress: cfg.busAddress, SysrootPath: cfg.sysroot, TxnSocket: cfg.txnSocket, RunDir: cfg.runDir, Log: log,
	})
	if err != nil {
		return err
	}
	go serveControl(ctx, cfg.control, srv, log)
	select {
	case <-ctx.Done():
		return srv.Close()
	case <-rebootRequested:
		if !cfg.exitOnReboot {
			<-ctx.Done()
			return srv.Close()
		}
		// Finished has reached the clients; give their connections a moment to read it, as
		// a real host's shutdown would.
		time.Sleep(200 * time.Millisecond)
		return errors.Join(errRebooting, srv.Close())
	}
}
