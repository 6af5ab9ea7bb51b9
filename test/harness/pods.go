package harness

import (
	"context"
	"fmt"
	"io"
	"time"
)

// PodTemplate is a program the harness runs on a node like a DaemonSet pod: started now, stopped
// when the node reboots and started again after boot.
type PodTemplate struct {
	Name           string
	Path           string
	Args           []string
	Env            []string
	Stdout, Stderr io.Writer
}

type podSlot struct {
	tmpl PodTemplate
	pod  *Pod
}

func (p *podSlot) start(n *Node) error {
	booted, err := n.Booted()
	if err != nil {
		return fmt.Errorf("starting pod %s on %s: %w", p.tmpl.Name, n.Name, err)
	}
	p.pod, err = StartPod(PodSpec{
		RunDir: n.RunDir, Root: booted.Dir, Var: n.Sysroot.StaterootVar(), Sysroot: n.Sysroot.Path,
		Path: p.tmpl.Path, Args: p.tmpl.Args, Env: p.tmpl.Env, Stdout: p.tmpl.Stdout, Stderr: p.tmpl.Stderr,
	})
	return err
}

func (p *podSlot) stop() error {
	if p.pod == nil {
		return nil
	}
	err := p.pod.Stop(10 * time.Second)
	p.pod = nil
	return err
}

// RunPod starts tmpl on the node the way a DaemonSet pod runs (see PodSpec) and keeps it across
// reboots. The returned function stops it for good. On a booted-tier node the pod runs on the
// host with the node's /run (RunDir, the container's /run) and its booted deployment at /host;
// it stops when the node shuts down and starts again once the node is up; RunPod fails while
// the node is down.
func (n *Node) RunPod(tmpl PodTemplate) (*Pod, func() error, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	slot := &podSlot{tmpl: tmpl}
	if err := slot.start(n); err != nil {
		return nil, nil, err
	}
	n.pods = append(n.pods, slot)
	stop := func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		for i, s := range n.pods {
			if s == slot {
				n.pods = append(n.pods[:i], n.pods[i+1:]...)
			}
		}
		return slot.stop()
	}
	return slot.pod, stop, nil
}

// Pod returns the current process of a pod started with RunPod (it changes at every reboot).
func (n *Node) Pod(name string) *Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.pods {
		if s.tmpl.Name == name {
			return s.pod
		}
	}
	return nil
}

// CrashStandIn kills the node's rpm-ostreed stand-in (SIGKILL) and starts a new one, as systemd
// would restart rpm-ostreed; what it reports must come from disk.
//
// On a booted-tier node the unit rpm-ostreed.service gets SIGKILL and is started again.
func (n *Node) CrashStandIn() error {
	if n.booted != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return n.booted.crashStandIn(ctx, n.Sysroot.OSName)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.standIn != nil {
		s := n.standIn
		n.standIn = nil
		s.crash()
	}
	return n.launchStandIn()
}
