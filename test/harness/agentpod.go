package harness

import "io"

// PodSystemBus is the environment of a pod that talks to its node's system bus: the node's /run
// is the pod's /run, as in the DaemonSet.
const PodSystemBus = "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket"

// AgentPod is the PodTemplate of `layerd agent` (binary bin) on n the way the DaemonSet runs it
// in this world: the node's name, the Pod-bound kubeconfig (Node.AgentKubeconfig), the agent
// namespace, the world's trust files, metrics and health on free loopback ports, console logs to
// out. extra flags come last and win over the defaults (e.g. "--log-journal", "auto").
func (w *World) AgentPod(n *Node, bin, kubeconfig string, out io.Writer, extra ...string) PodTemplate {
	args := append([]string{"layerd", "agent", "--node-name", n.Name, "--kubeconfig", kubeconfig,
		"--namespace", AgentNamespace, "--policy", w.Trust.PolicyPath,
		"--registries-d", w.Trust.RegistriesDDir, "--registries-conf", w.Trust.RegistriesConfPath,
		"--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--log-format", "console", "--log-journal", "off"},
		extra...)
	return PodTemplate{Name: "layerd-agent", Path: bin, Args: args, Env: []string{PodSystemBus}, Stdout: out, Stderr: out}
}
