package ostreesys

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Deployment is one deployment as found on disk.
type Deployment struct {
	Index      int    // position in Deployments(): staged first, then boot order (0 = default)
	BLSVersion int    // `version` of the BLS entry (0 for staged)
	OSName     string // stateroot
	Checksum   string // commit checksum
	Serial     int
	BootCsum   string
	Options    string // BLS `options` line (kernel arguments incl. ostree=)
	Path       string // absolute deployment directory
	Staged     bool   // from <RunDir>/ostree/staged-deployment
	Pinned     bool   // origin [libostree-transient] pinned=true
	Origin     Origin
	// From the commit: string metadata, `version`, ostree.manifest-digest, timestamp.
	Metadata       map[string]string
	Version        string
	ManifestDigest string
	Timestamp      time.Time
}

// Kargs returns the kernel arguments without the ostree-managed ones.
func (d Deployment) Kargs() []string {
	var out []string
	for _, f := range strings.Fields(d.Options) {
		if strings.HasPrefix(f, "ostree=") || strings.HasPrefix(f, "init=/ostree/") {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Deployments reads the deployment list from disk: the staged deployment
// (if RunDir is set and holds ostree/staged-deployment) first, then the BLS
// entries of boot/loader/entries ordered by descending version (the highest
// version is the default). Commit metadata comes from the repository.
func (s *Sysroot) Deployments() ([]Deployment, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []Deployment
	if staged, ok, err := s.readStaged(ctx); err != nil {
		return nil, err
	} else if ok {
		out = append(out, staged)
	}
	bls, err := s.readBLS()
	if err != nil {
		return nil, err
	}
	out = append(out, bls...)
	for i := range out {
		out[i].Index = i
		if err := s.fill(ctx, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readBLS parses boot/loader/entries/*.conf, sorted by descending version.
func (s *Sysroot) readBLS() ([]Deployment, error) {
	dir := filepath.Join(s.Path, "boot", "loader", "entries")
	files, err := filepath.Glob(filepath.Join(dir, "ostree-*.conf"))
	if err != nil {
		return nil, fmt.Errorf("ostreesys: list BLS entries: %w", err)
	}
	var out []Deployment
	for _, f := range files {
		d, err := s.parseBLS(f)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].BLSVersion > out[j].BLSVersion })
	return out, nil
}

var deployDirRE = regexp.MustCompile(`^([0-9a-f]{64})\.([0-9]+)$`)

func (s *Sysroot) parseBLS(file string) (Deployment, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Deployment{}, fmt.Errorf("ostreesys: read BLS entry: %w", err)
	}
	var d Deployment
	var ostreeArg string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		v = strings.TrimSpace(v)
		switch k {
		case "version":
			if d.BLSVersion, err = strconv.Atoi(v); err != nil {
				return d, fmt.Errorf("ostreesys: %s: bad version %q", file, v)
			}
		case "options":
			d.Options = v
			for _, f := range strings.Fields(v) {
				if a, ok := strings.CutPrefix(f, "ostree="); ok {
					ostreeArg = a
				}
			}
		}
	}
	if ostreeArg == "" {
		return d, fmt.Errorf("ostreesys: %s: no ostree= in options", file)
	}
	// ostree=/ostree/boot.N/<os>/<bootcsum>/<bootserial> → symlink chain to
	// ostree/deploy/<os>/deploy/<csum>.<serial> (relative links).
	parts := strings.Split(strings.Trim(ostreeArg, "/"), "/")
	if len(parts) >= 4 {
		d.BootCsum = parts[len(parts)-2]
	}
	real, err := filepath.EvalSymlinks(filepath.Join(s.Path, ostreeArg))
	if err != nil {
		return d, fmt.Errorf("ostreesys: %s: resolve %s: %w", file, ostreeArg, err)
	}
	if err := s.setFromDir(&d, real); err != nil {
		return d, fmt.Errorf("ostreesys: %s: %w", file, err)
	}
	return d, nil
}

// setFromDir fills OSName/Checksum/Serial/Path from a deployment directory.
func (s *Sysroot) setFromDir(d *Deployment, dir string) error {
	m := deployDirRE.FindStringSubmatch(filepath.Base(dir))
	if m == nil || filepath.Base(filepath.Dir(dir)) != "deploy" {
		return fmt.Errorf("%s is not a deployment directory", dir)
	}
	d.Checksum = m[1]
	d.Serial, _ = strconv.Atoi(m[2])
	d.OSName = filepath.Base(filepath.Dir(filepath.Dir(dir)))
	d.Path = dir
	return nil
}

// fill reads the origin file and commit metadata.
func (s *Sysroot) fill(ctx context.Context, d *Deployment) error {
	data, err := os.ReadFile(d.Path + ".origin")
	switch {
	case err == nil:
		d.Origin = ParseOrigin(data)
		d.Pinned = d.Origin.Pinned
	case errors.Is(err, os.ErrNotExist) && d.Staged:
		// libostree writes a staged deployment's origin at finalization.
	default:
		return fmt.Errorf("ostreesys: origin of %s: %w", d.Path, err)
	}
	c, err := s.ReadCommit(ctx, d.Checksum)
	if err != nil {
		return err
	}
	d.Metadata, d.Timestamp = c.Metadata, c.Timestamp
	d.Version = c.Metadata[MetaVersion]
	d.ManifestDigest = c.Metadata[MetaManifestDigest]
	return nil
}

// stagedFile is libostree's _OSTREE_SYSROOT_RUNSTATE_STAGED, relative to /run.
const stagedFile = "ostree/staged-deployment"

// readStaged decodes <RunDir>/ostree/staged-deployment (a serialized
// GVariant a{sv}) with `ostree show --print-variant-type`.
func (s *Sysroot) readStaged(ctx context.Context) (Deployment, bool, error) {
	if s.RunDir == "" {
		return Deployment{}, false, nil
	}
	path := filepath.Join(s.RunDir, stagedFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return Deployment{}, false, nil
	} else if err != nil {
		return Deployment{}, false, fmt.Errorf("ostreesys: staged deployment: %w", err)
	}
	out, err := run(ctx, "ostree", "show", "--repo="+s.RepoPath(), "--print-variant-type=a{sv}", path)
	if err != nil {
		return Deployment{}, false, fmt.Errorf("ostreesys: decode %s: %w", path, err)
	}
	target, err := parseStagedTarget(string(out))
	if err != nil {
		return Deployment{}, false, fmt.Errorf("ostreesys: %s: %w", path, err)
	}
	dir := filepath.Join(s.Path, "ostree", "deploy", target.osname, "deploy", target.name)
	d := Deployment{Staged: true}
	if err := s.setFromDir(&d, dir); err != nil {
		return d, false, fmt.Errorf("ostreesys: staged: %w", err)
	}
	if _, err := os.Stat(dir); err != nil {
		return d, false, fmt.Errorf("ostreesys: staged deployment dir: %w", err)
	}
	return d, true, nil
}

type stagedTarget struct{ name, osname string }

// parseStagedTarget reads the "target" entry of the staged-deployment
// variant: libostree 2022.7 writes {'target': <{'name': <'<csum>.<serial>'>,
// 'osname': <…>, 'bootcsum': <…>}>, 'merge-deployment': <…>, …}; other
// versions spell it 'csum' + 'serial'.
func parseStagedTarget(text string) (stagedTarget, error) {
	outer, err := parseDict(text)
	if err != nil {
		return stagedTarget{}, err
	}
	raw, ok := outer["target"]
	if !ok || !strings.HasPrefix(raw, "<") || !strings.HasSuffix(raw, ">") {
		return stagedTarget{}, fmt.Errorf("no target in %q", text)
	}
	inner, err := parseDict(raw[1 : len(raw)-1])
	if err != nil {
		return stagedTarget{}, err
	}
	str := func(k string) string {
		v := strings.TrimSpace(inner[k])
		if strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">") {
			v = strings.TrimSpace(v[1 : len(v)-1])
		}
		if s, ok := parseGVString(v); ok {
			return s
		}
		return strings.TrimSpace(strings.TrimPrefix(v, "int32 "))
	}
	t := stagedTarget{name: str("name"), osname: str("osname")}
	if t.name == "" && str("csum") != "" {
		t.name = str("csum") + "." + str("serial")
	}
	if !deployDirRE.MatchString(t.name) || t.osname == "" {
		return stagedTarget{}, fmt.Errorf("unexpected target in %q", text)
	}
	return t, nil
}
