package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"layerd.dev/layerd/test/ostreesys"
)

// bootedMarker records, inside the node's /run, which deployment the node
// booted: "<osname>/<checksum>.<serial>". It plays the part of the kernel
// command line's ostree= argument, so like /run it lives exactly one boot:
// Boot writes it after clearing /run. Without it (a node that was deployed
// but never went through Boot) the default deployment counts as booted.
const bootedMarker = "layerd-fakeboot/booted"

func readBootedMarker(runDir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(runDir, bootedMarker))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read booted marker: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

func writeBootedMarker(runDir string, d deployment) error {
	p := filepath.Join(runDir, bootedMarker)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write booted marker: %w", err)
	}
	if err := os.WriteFile(p, []byte(d.OSName+"/"+d.name()+"\n"), 0o644); err != nil {
		return fmt.Errorf("write booted marker: %w", err)
	}
	return nil
}

// BootedDeployment identifies a deployment directory of a sysroot.
type BootedDeployment struct {
	OSName   string
	Checksum string
	Serial   int
	Dir      string // absolute deployment directory (the fake boot's root)
	Kargs    string // the BLS options line it was booted with
}

// BootResult says what Boot did.
type BootResult struct {
	// Booted is the deployment the node runs after the boot.
	Booted BootedDeployment
	// Finalized is true when a staged deployment was finalized at shutdown.
	Finalized bool
	// SkippedLocked is true when a staged deployment was left alone because
	// it was finalization-locked (it is gone after the boot).
	SkippedLocked bool
	// FinalizeOutput is what `ostree admin finalize-staged` printed.
	FinalizeOutput string
	// FinalizeErr is a failed finalization; as on a real host, the node then
	// boots the old default deployment and the staged one is lost.
	FinalizeErr error
}

// Boot reboots a directory-tier node the way shutdown and the bootloader
// would: ostree-finalize-staged.service runs `ostree admin finalize-staged`
// in the running (booted) deployment when a staged deployment exists and is
// not finalization-locked (the /etc 3-way merge sees /etc as it is now);
// then /run is emptied (runDir itself stays) and the highest BLS entry is
// booted. The choice is recorded in runDir, so a restarted stand-in reports
// the same booted deployment. Boot must not run concurrently with a
// transaction of the stand-in on the same sysroot.
func Boot(ctx context.Context, sysroot, runDir string) (BootResult, error) {
	var res BootResult
	sysroot, err := filepath.Abs(sysroot)
	if err != nil {
		return res, fmt.Errorf("boot: %w", err)
	}
	runDir, err = filepath.Abs(runDir)
	if err != nil {
		return res, fmt.Errorf("boot: %w", err)
	}
	reader := newStateReader(sysroot, runDir)
	st, err := reader.read()
	if err != nil {
		return res, fmt.Errorf("boot: shutdown: %w", err)
	}
	if staged := st.staged(); staged != nil {
		booted := st.booted()
		switch {
		case staged.Locked:
			res.SkippedLocked = true
		case booted == nil:
			res.FinalizeErr = errors.New("no booted deployment to finalize from")
		default:
			sys := ostreesys.Open(sysroot, booted.OSName)
			out, err := sys.ExecBooted(ctx, booted.Dir, runDir, "ostree", "admin", "finalize-staged")
			res.FinalizeOutput = string(out)
			if err != nil {
				res.FinalizeErr = err
			} else {
				res.Finalized = true
			}
		}
	}
	if err := clearDir(runDir); err != nil {
		return res, fmt.Errorf("boot: clear /run: %w", err)
	}
	st, err = reader.read() // no marker any more, so the default is "booted"
	if err != nil {
		return res, fmt.Errorf("boot: bootloader: %w", err)
	}
	d := st.booted()
	if d == nil {
		return res, errors.New("boot: bootloader: no boot entries")
	}
	if err := writeBootedMarker(runDir, *d); err != nil {
		return res, fmt.Errorf("boot: %w", err)
	}
	res.Booted = BootedDeployment{OSName: d.OSName, Checksum: d.Checksum, Serial: d.Serial, Dir: d.Dir}
	if d.Entry != nil {
		res.Booted.Kargs = d.Entry.get("options")
	}
	return res, nil
}

// Booted reports the deployment a node currently runs (from its boot marker
// in runDir, or the default deployment when it has none).
func Booted(sysroot, runDir string) (BootedDeployment, error) {
	st, err := newStateReader(sysroot, runDir).read()
	if err != nil {
		return BootedDeployment{}, fmt.Errorf("booted deployment: %w", err)
	}
	d := st.booted()
	if d == nil {
		return BootedDeployment{}, errors.New("booted deployment: none")
	}
	b := BootedDeployment{OSName: d.OSName, Checksum: d.Checksum, Serial: d.Serial, Dir: d.Dir}
	if d.Entry != nil {
		b.Kargs = d.Entry.get("options")
	}
	return b, nil
}

// clearDir removes everything inside dir (a new boot starts with an empty
// /run); dir itself is kept because the node's mounts refer to it.
func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
