// Command nspawn-base builds (once) the cached bootable base of the booted node tier — the
// debootstrap rootfs and its committed ostree tree under ${LAYERD_CACHE:-~/.cache/layerd}/rootfs
// — and prints the bare repo holding it. `make deps` can run it so that the first `make test`
// does not spend minutes in debootstrap. Needs root.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"layerd.dev/layerd/test/nspawn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := nspawn.Prerequisites(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	base, err := nspawn.EnsureBase(ctx, nspawn.RootfsOptions{Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(base.Repo)
}
