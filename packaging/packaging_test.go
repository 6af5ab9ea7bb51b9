package packaging_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"layerd.dev/layerd/packaging"
	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/kube"
)

var plane = &kube.Lazy{Options: kube.Options{NoControllerManager: true}}

func TestMain(m *testing.M) { plane.Main(m) }

func objects(t *testing.T) []runtime.Object {
	t.Helper()
	objs, err := harness.PackagingObjects()
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	for _, o := range objects(t) {
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			return ds
		}
	}
	t.Fatal("packaging/kubernetes holds no DaemonSet")
	return nil
}

func configMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	for _, o := range objects(t) {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == coord.ConfigMapName {
			return cm
		}
	}
	t.Fatalf("packaging/kubernetes holds no ConfigMap %s", coord.ConfigMapName)
	return nil
}

// Every manifest decodes strictly with client-go's scheme, and the expected kinds are there.
func TestManifestsDecodeStrictly(t *testing.T) {
	kinds := map[string]int{}
	for _, o := range objects(t) {
		kinds[reflect.TypeOf(o).Elem().Name()]++
		if m, ok := o.(metav1.Object); ok {
			if _, ns := o.(*corev1.Namespace); !ns && !isClusterScoped(o) && m.GetNamespace() != harness.AgentNamespace {
				t.Errorf("%T %s is in namespace %q, want %s", o, m.GetName(), m.GetNamespace(), harness.AgentNamespace)
			}
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "DaemonSet"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in packaging/kubernetes (have %v)", k, kinds)
		}
	}
	// The strict decoder really is strict: a misspelt field fails.
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	if _, _, err := dec.Decode([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndatta: {}\n"), nil, nil); err == nil {
		t.Error("the strict decoder accepted an unknown field")
	}
}

func isClusterScoped(o runtime.Object) bool {
	switch o.(type) {
	case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
		return true
	}
	return false
}

// kustomization.yaml lists every manifest (kubectl apply -k installs what the tests apply).
func TestKustomizationListsEveryManifest(t *testing.T) {
	b, err := fs.ReadFile(packaging.Kubernetes, "kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(packaging.Kubernetes, "kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest %v", got, want)
	}
}

// agentFlags reads the flag names of `layerd agent` from cmd/layerd/agent.go.
func agentFlags(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "cmd", "layerd", "agent.go"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`fl\.(?:String|Bool|Int|Duration|StringSlice)(?:Var)?P?\((?:&[\w.]+,\s*)?"([a-z0-9-]+)"`)
	flags := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 10 || !flags["node-name"] || !flags["host-root"] {
		t.Fatalf("read only %v from cmd/layerd/agent.go: the pattern is out of date", flags)
	}
	return flags
}

// containerArgs returns the DaemonSet's agent container and its --flag=value pairs.
func containerArgs(t *testing.T, ds *appsv1.DaemonSet) (corev1.Container, map[string]string) {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers, want the agent only", len(cs))
	}
	c := cs[0]
	if len(c.Args) == 0 || c.Args[0] != "agent" {
		t.Fatalf("args %q: want `agent` first", c.Args)
	}
	args := map[string]string{}
	for _, a := range c.Args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("arg %q: want --flag=value", a)
			continue
		}
		if _, dup := args[name]; dup {
			t.Errorf("flag --%s given twice", name)
		}
		args[name] = value
	}
	return c, args
}

func TestDaemonSetArgsAreAgentFlags(t *testing.T) {
	flags := agentFlags(t)
	ds := daemonSet(t)
	c, args := containerArgs(t, ds)
	for name := range args {
		if !flags[name] {
			t.Errorf("--%s is not a flag of `layerd agent` (it has %v)", name, slices.Sorted(mapsKeys(flags)))
		}
	}
	for _, name := range []string{"node-name", "host-root", "policy", "registries-d", "registries-conf", "namespace", "metrics-addr", "health-addr", "log-format", "log-journal"} {
		if _, ok := args[name]; !ok {
			t.Errorf("the DaemonSet does not set --%s", name)
		}
	}
	if got := args["namespace"]; got != ds.Namespace {
		t.Errorf("--namespace=%s, the DaemonSet is in %s", got, ds.Namespace)
	}
	// --node-name comes from the downward API (the agent's own default is $NODE_NAME too).
	if got := args["node-name"]; got != "$(NODE_NAME)" {
		t.Errorf("--node-name=%s, want $(NODE_NAME)", got)
	}
	var nodeName *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "NODE_NAME" {
			nodeName = &c.Env[i]
		}
	}
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env NODE_NAME is %+v, want fieldRef spec.nodeName", nodeName)
	}
	// The probes and ports are on the addresses the flags name.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if want := ":" + itoa(ports["health"]); args["health-addr"] != want {
		t.Errorf("--health-addr=%s, port health is %d", args["health-addr"], ports["health"])
	}
	if want := ":" + itoa(ports["metrics"]); args["metrics-addr"] != want {
		t.Errorf("--metrics-addr=%s, port metrics is %d", args["metrics-addr"], ports["metrics"])
	}
	for probe, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != probe || p.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %s is %+v, want httpGet %s on port health", probe, p, probe)
		}
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// The mounts are those of DESIGN §3b, and the flags read through them.
func TestDaemonSetMountsMatchDesign(t *testing.T) {
	ds := daemonSet(t)
	c, args := containerArgs(t, ds)
	spec := ds.Spec.Template.Spec
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	type mount struct {
		host     string
		readOnly bool
	}
	mounts := map[string]mount{}
	for _, m := range c.VolumeMounts {
		if m.Name == signaturePolicyVolume {
			continue // a ConfigMap, checked by TestShippedSignaturePolicy
		}
		h, ok := hostPaths[m.Name]
		if !ok {
			t.Errorf("mount %s: volume %s is not a hostPath", m.MountPath, m.Name)
			continue
		}
		if m.SubPath != "" {
			t.Errorf("mount %s uses a subPath", m.MountPath)
		}
		mounts[m.MountPath] = mount{h, m.ReadOnly}
	}
	hostRoot := args["host-root"]
	want := map[string]mount{
		"/run":                {"/run", false},    // rpm-ostree's socket, the system bus, journald, /run/ostree/auth.json
		hostRoot:              {"/", false},       // writes go to the live /host/etc and /host/var
		hostRoot + "/sysroot": {"/sysroot", true}, // deployments are read, never written
		"/etc/containers":     {"/etc/containers", true},
	}
	for path, w := range want {
		if got, ok := mounts[path]; !ok || got != w {
			t.Errorf("mount %s is %+v (present %v), want host %s read-only=%v", path, got, ok, w.host, w.readOnly)
		}
	}
	for _, f := range []string{"registries-d", "registries-conf"} {
		if !strings.HasPrefix(args[f], "/etc/containers/") {
			t.Errorf("--%s=%s is not read from the host's /etc/containers", f, args[f])
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("the agent container is not privileged (rpm-ostree's socket, host mounts)")
	}
	if spec.HostPID || spec.HostNetwork {
		t.Errorf("hostPID=%v hostNetwork=%v: neither is needed", spec.HostPID, spec.HostNetwork)
	}
}

func TestDaemonSetSchedulingAndIdentity(t *testing.T) {
	ds := daemonSet(t)
	spec := ds.Spec.Template.Spec
	if ds.Name != "layerd-agent" || ds.Namespace != harness.AgentNamespace {
		t.Errorf("DaemonSet %s/%s, want %s/layerd-agent (the harness's agent pods are owned by it)", ds.Namespace, ds.Name, harness.AgentNamespace)
	}
	if got := ds.Spec.Selector.MatchLabels; !reflect.DeepEqual(got, map[string]string{"app": "layerd-agent"}) {
		t.Errorf("selector %v, want app=layerd-agent (the drain skips app=layerd-agent)", got)
	}
	if spec.ServiceAccountName != harness.AgentServiceAccount {
		t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, harness.AgentServiceAccount)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	tolerateAll := slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	})
	if !tolerateAll {
		t.Errorf("tolerations %+v do not tolerate every taint", spec.Tolerations)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable == nil || us.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1", us)
	}
	c := spec.Containers[0]
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
}

// The shipped pools.yaml parses, and its commented example uses only keys pkg/coord knows.
func TestConfigMapPools(t *testing.T) {
	cm := configMap(t)
	doc, ok := cm.Data[coord.ConfigKeyPools]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, coord.ConfigKeyPools)
	}
	cfg, err := coord.ParseConfig(cm)
	if err != nil {
		t.Fatal(err)
	}
	if mu := cfg.Pool("default").MaxUnavailable; mu.String() != "1" {
		t.Errorf("the shipped config gives pool default maxUnavailable %s, want the default 1", mu.String())
	}
	// Every documented knob (`#   key:` at the pool level) is a key pkg/coord knows.
	knob := regexp.MustCompile(`(?m)^#   ([A-Za-z]+):`)
	seen := 0
	for _, m := range knob.FindAllStringSubmatch(doc, -1) {
		seen++
		if !slices.Contains(coord.PolicyKeys, m[1]) {
			t.Errorf("pools.yaml documents %q, not a key of coord.PolicyKeys %v", m[1], coord.PolicyKeys)
		}
	}
	if seen < 5 {
		t.Errorf("pools.yaml documents only %d knobs", seen)
	}
	// The example, uncommented, parses with no unknown keys.
	_, example, ok := strings.Cut(doc, "# Example:\n")
	if !ok {
		t.Fatal("pools.yaml has no `# Example:` block")
	}
	var lines []string
	for _, l := range strings.Split(example, "\n") {
		lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "#"), " "))
	}
	ex := &corev1.ConfigMap{ObjectMeta: cm.ObjectMeta, Data: map[string]string{coord.ConfigKeyPools: strings.Join(lines, "\n")}}
	cfg, err = coord.ParseConfig(ex)
	if err == nil {
		err = cfg.Err()
	}
	if err != nil {
		t.Fatalf("the example: %v", err)
	}
	if u := cfg.Unknown(); len(u) > 0 {
		t.Errorf("the example has unknown keys %v", u)
	}
	if n, err := cfg.Pool("workers").Slots(8); err != nil || n != 2 {
		t.Errorf("example pool workers of 8 nodes: %d slots, %v; want 2", n, err)
	}
}

// The real API server accepts every manifest (the harness's own path: every world applies them),
// and the agent pod the DaemonSet would create is admitted (dry run).
func TestManifestsApplyToAPIServer(t *testing.T) {
	c := plane.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := harness.ApplyPackaging(ctx, c.Client, false); err != nil {
		t.Fatal(err)
	}
	// Applying again is harmless (what exists is left alone), and a server-side dry run of
	// every object passes validation once the namespace exists.
	if err := harness.ApplyPackaging(ctx, c.Client, true); err != nil {
		t.Fatal(err)
	}
	ds, err := c.Client.AppsV1().DaemonSets(harness.AgentNamespace).Get(ctx, "layerd-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := daemonSet(t); !reflect.DeepEqual(ds.Spec.Template.Spec.Containers[0].Args, want.Spec.Template.Spec.Containers[0].Args) {
		t.Errorf("stored args %q differ from the manifest's %q", ds.Spec.Template.Spec.Containers[0].Args, want.Spec.Template.Spec.Containers[0].Args)
	}
	cm, err := c.Client.CoreV1().ConfigMaps(harness.AgentNamespace).Get(ctx, coord.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coord.ParseConfig(cm); err != nil {
		t.Errorf("the stored %s: %v", coord.ConfigMapName, err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "layerd-agent-dryrun", Namespace: harness.AgentNamespace, Labels: ds.Spec.Template.Labels},
		Spec:       *ds.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = "node-1"
	if _, err := c.Client.CoreV1().Pods(harness.AgentNamespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the agent pod is not admitted: %v", err)
	}
}
