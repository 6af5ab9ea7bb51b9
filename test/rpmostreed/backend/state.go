package backend

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"layerd.dev/layerd/test/ostreesys"
)

// Paths under the node's /run (RunDir) that libostree and the fake boot use.
const (
	stagedFile       = "ostree/staged-deployment"        // libostree's staged state (GVariant a{sv})
	stagedLockedFile = "ostree/staged-deployment-locked" // 2022.7's finalization lock
	deploymentState  = "ostree/deployment-state"         // per-deployment runtime state (unlock)
)

// deployment is one deployment as libostree sees it, read from disk.
type deployment struct {
	OSName   string
	Checksum string
	Serial   int
	BootCsum string
	Dir      string // absolute deployment directory
	Staged   bool
	Booted   bool
	Locked   bool // staged and finalization-locked
	// LegacyLocked: the legacy lock file exists and lock-finalization did
	// not create it (the only case rpm-ostree reports finalization-locked).
	LegacyLocked bool
	Unlocked     string
	Origin       ostreesys.Origin
	Commit       commitInfo
	Entry        *blsEntry // nil for the staged deployment
}

// name is libostree's "<checksum>.<serial>".
func (d deployment) name() string { return fmt.Sprintf("%s.%d", d.Checksum, d.Serial) }

// id is rpm-ostree's deployment id "<osname>-<checksum>.<serial>".
func (d deployment) id() string { return d.OSName + "-" + d.name() }

// state is the sysroot as it is on disk now.
type state struct {
	Deployments []deployment // staged first, then boot order (default first)
	Booted      int          // index into Deployments, -1 when not booted here
	BootVersion int          // current boot/loader.N, -1 without one
}

func (s state) booted() *deployment {
	if s.Booted < 0 {
		return nil
	}
	return &s.Deployments[s.Booted]
}

func (s state) staged() *deployment {
	if len(s.Deployments) > 0 && s.Deployments[0].Staged {
		return &s.Deployments[0]
	}
	return nil
}

// pendingRollback returns, for osname, the first deployment ahead of the
// booted one (pending, including staged) and the first one after it
// (rollback), as ostree_sysroot_query_deployments_for does.
func (s state) pendingRollback(osname string) (pending, rollback *deployment) {
	if s.Booted < 0 {
		return nil, nil
	}
	for i := range s.Deployments {
		d := &s.Deployments[i]
		if d.OSName != osname || i == s.Booted {
			continue
		}
		if i < s.Booted && pending == nil {
			pending = d
		}
		if i > s.Booted && rollback == nil {
			rollback = d
		}
	}
	return pending, rollback
}

// blsEntry is one boot/loader/entries/*.conf.
type blsEntry struct {
	File    string
	Version string
	Lines   [][2]string // key, value in file order
	Ostree  string      // the ostree= kernel argument
}

func (e *blsEntry) get(key string) string {
	for _, kv := range e.Lines {
		if kv[0] == key {
			return kv[1]
		}
	}
	return ""
}

// stateReader reads a sysroot's deployments from disk.
type stateReader struct {
	sysroot string
	runDir  string
	// rootDir, when set, is the running root ("/" in the booted tier): the
	// booted deployment is the one with its device and inode, as libostree
	// decides. Otherwise the fake boot's marker in runDir decides.
	rootDir string
	commits *commitReader
}

func newStateReader(sysroot, runDir string) *stateReader {
	return &stateReader{sysroot: sysroot, runDir: runDir,
		commits: newCommitReader(filepath.Join(sysroot, "ostree", "repo"))}
}

var deployDirRE = regexp.MustCompile(`^([0-9a-f]{64})\.([0-9]+)$`)

// read loads the whole state: BLS entries of the current boot version, the
// staged deployment from RunDir, origins, commits and the booted marker.
func (r *stateReader) read() (state, error) {
	st := state{Booted: -1, BootVersion: -1}
	entries, bootVersion, err := readBLS(r.sysroot)
	if err != nil {
		return st, err
	}
	st.BootVersion = bootVersion
	staged, err := r.readStaged()
	if err != nil {
		return st, err
	}
	if staged != nil {
		st.Deployments = append(st.Deployments, *staged)
	}
	for _, e := range entries {
		dir, err := filepath.EvalSymlinks(filepath.Join(r.sysroot, e.Ostree))
		if err != nil {
			return st, fmt.Errorf("BLS entry %s: resolve ostree=%s: %w", e.File, e.Ostree, err)
		}
		d, err := deploymentFromDir(dir)
		if err != nil {
			return st, fmt.Errorf("BLS entry %s: %w", e.File, err)
		}
		parts := strings.Split(strings.Trim(e.Ostree, "/"), "/")
		d.BootCsum = parts[len(parts)-2]
		d.Entry = e
		st.Deployments = append(st.Deployments, d)
	}
	if r.rootDir != "" {
		st.Booted = bootedByInode(st.Deployments, r.rootDir)
	} else if st.Booted, err = bootedByMarker(st.Deployments, r.runDir); err != nil {
		return st, err
	}
	if st.Booted >= 0 {
		st.Deployments[st.Booted].Booted = true
	}
	for i := range st.Deployments {
		if err := r.fill(&st.Deployments[i]); err != nil {
			return st, err
		}
	}
	return st, nil
}

// bootedByMarker finds the deployment named by the boot marker; without a
// marker (never booted through Boot) the default deployment counts as booted.
func bootedByMarker(ds []deployment, runDir string) (int, error) {
	marker, err := readBootedMarker(runDir)
	if err != nil {
		return -1, err
	}
	first := -1
	for i, d := range ds {
		if d.Staged {
			continue
		}
		if first < 0 {
			first = i
		}
		if d.OSName+"/"+d.name() == marker {
			return i, nil
		}
	}
	// No marker, or the marked deployment is gone from the boot entries (a
	// real host would still run it; nothing more can be said from disk).
	return first, nil
}

// bootedByInode finds the deployment whose directory is root (same device
// and inode), as libostree finds the booted deployment.
func bootedByInode(ds []deployment, root string) int {
	var rs unix.Stat_t
	if err := unix.Stat(root, &rs); err != nil {
		return -1
	}
	for i, d := range ds {
		var ds unix.Stat_t
		if d.Staged || unix.Stat(d.Dir, &ds) != nil {
			continue
		}
		if ds.Dev == rs.Dev && ds.Ino == rs.Ino {
			return i
		}
	}
	return -1
}

// fill reads the origin file, the commit and the unlock state.
func (r *stateReader) fill(d *deployment) error {
	data, err := os.ReadFile(d.Dir + ".origin")
	switch {
	case err == nil:
		d.Origin = ostreesys.ParseOrigin(data)
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("origin of %s: %w", d.name(), err)
	}
	if d.Commit, err = r.commits.read(d.Checksum); err != nil {
		return err
	}
	d.Unlocked = "none"
	if u := d.Origin.Extra["origin"]["unlocked"]; u != "" {
		d.Unlocked = u
	}
	if d.Booted {
		for _, u := range []string{"development", "transient"} {
			if _, err := os.Stat(filepath.Join(r.runDir, deploymentState, d.name(), u)); err == nil {
				d.Unlocked = u
			}
		}
	}
	return nil
}

func deploymentFromDir(dir string) (deployment, error) {
	m := deployDirRE.FindStringSubmatch(filepath.Base(dir))
	if m == nil || filepath.Base(filepath.Dir(dir)) != "deploy" {
		return deployment{}, fmt.Errorf("%s is not a deployment directory", dir)
	}
	serial, err := strconv.Atoi(m[2])
	if err != nil {
		return deployment{}, fmt.Errorf("deployment serial of %s: %w", dir, err)
	}
	return deployment{
		OSName:   filepath.Base(filepath.Dir(filepath.Dir(dir))),
		Checksum: m[1],
		Serial:   serial,
		Dir:      dir,
	}, nil
}

// readBLS parses boot/loader/entries/*.conf of the current boot version,
// sorted as libostree sorts them: highest version first.
func readBLS(sysroot string) ([]*blsEntry, int, error) {
	link, err := os.Readlink(filepath.Join(sysroot, "boot", "loader"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, -1, nil
	}
	if err != nil {
		return nil, -1, fmt.Errorf("read boot/loader: %w", err)
	}
	bootVersion, err := strconv.Atoi(strings.TrimPrefix(link, "loader."))
	if err != nil {
		return nil, -1, fmt.Errorf("boot/loader points to %q", link)
	}
	files, err := filepath.Glob(filepath.Join(sysroot, "boot", "loader", "entries", "*.conf"))
	if err != nil {
		return nil, -1, fmt.Errorf("list BLS entries: %w", err)
	}
	var out []*blsEntry
	for _, f := range files {
		e, err := parseBLSEntry(f)
		if err != nil {
			return nil, -1, err
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return versionLess(out[j].Version, out[i].Version) })
	return out, bootVersion, nil
}

func parseBLSEntry(file string) (*blsEntry, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read BLS entry: %w", err)
	}
	e := &blsEntry{File: file}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		v = strings.TrimSpace(v)
		e.Lines = append(e.Lines, [2]string{k, v})
		switch k {
		case "version":
			e.Version = v
		case "options":
			for _, f := range strings.Fields(v) {
				if a, ok := strings.CutPrefix(f, "ostree="); ok {
					e.Ostree = a
				}
			}
		}
	}
	if e.Ostree == "" {
		return nil, fmt.Errorf("BLS entry %s has no ostree= argument", file)
	}
	return e, nil
}

// versionLess compares BLS versions numerically when both are numbers.
func versionLess(a, b string) bool {
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	if ea == nil && eb == nil {
		return na < nb
	}
	return a < b
}

// readStaged decodes RunDir/ostree/staged-deployment. libostree 2022.7
// writes {"target": {"name": "<csum>.<serial>", "osname", "bootcsum"},
// "merge-deployment": …}; newer releases use "csum"/"serial" and may carry
// the origin and a "locked" flag inside.
func (r *stateReader) readStaged() (*deployment, error) {
	path := filepath.Join(r.runDir, stagedFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read staged deployment: %w", err)
	}
	v, err := decodeGVariant("a{sv}", data)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	top := v.(map[string]dbus.Variant)
	tv, ok := top["target"]
	if !ok {
		return nil, fmt.Errorf("%s: no target", path)
	}
	target, ok := tv.Value().(map[string]dbus.Variant)
	if !ok {
		return nil, fmt.Errorf("%s: target is %s", path, tv.Signature())
	}
	str := func(k string) string { s, _ := target[k].Value().(string); return s }
	name := str("name")
	if name == "" {
		serial, _ := target["serial"].Value().(int32)
		name = fmt.Sprintf("%s.%d", str("csum"), serial)
	}
	dir := filepath.Join(r.sysroot, "ostree", "deploy", str("osname"), "deploy", name)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("staged deployment %s: %w", name, err)
	}
	d, err := deploymentFromDir(dir)
	if err != nil {
		return nil, fmt.Errorf("staged deployment: %w", err)
	}
	d.Staged, d.BootCsum = true, str("bootcsum")
	if origin := str("origin"); origin != "" {
		d.Origin = ostreesys.ParseOrigin([]byte(origin))
	}
	locked, _ := top["locked"].Value().(bool)
	legacy, foreign := readFinalizationLock(r.runDir)
	d.Locked, d.LegacyLocked = locked || legacy, foreign
	return &d, nil
}
