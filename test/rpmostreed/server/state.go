package server

import (
	"context"

	"github.com/godbus/dbus/v5"
)

type dict = map[string]dbus.Variant

// osView is the OS object properties of one stateroot.
type osView struct {
	booted, def, rollback dict
}

// sysView is what the daemon shows for a set of deployments.
type sysView struct {
	deployments []dict
	booted      dbus.ObjectPath
	oses        map[string]osView
}

// computeView derives Sysroot and OS properties from the deployments as rpm-ostree does with
// libostree's query_deployments_for: for each stateroot, "pending" is its first deployment
// ahead of the booted one, "rollback" its first one after it; DefaultDeployment is pending, else
// the booted dict (empty when the booted deployment belongs to another stateroot).
func computeView(deps []dict, bootedIdx int) sysView {
	v := sysView{deployments: deps, booted: "/", oses: map[string]osView{}}
	if deps == nil {
		v.deployments = []dict{}
	}
	bootedOS := ""
	if bootedIdx >= 0 && bootedIdx < len(deps) {
		bootedOS = osnameOf(deps[bootedIdx])
		v.booted = OSPath(bootedOS)
	}
	for _, d := range deps {
		name := osnameOf(d)
		if _, done := v.oses[name]; done || name == "" {
			continue
		}
		ov := osView{booted: dict{}, rollback: dict{}}
		if name == bootedOS {
			ov.booted = deps[bootedIdx]
		}
		foundBooted := false
		var pending dict
		for i, e := range deps {
			if osnameOf(e) != name {
				continue
			}
			if i == bootedIdx {
				foundBooted = true
				continue
			}
			if !foundBooted && pending == nil {
				pending = e
			}
			if foundBooted && len(ov.rollback) == 0 {
				ov.rollback = e
			}
		}
		ov.def = ov.booted
		if pending != nil {
			ov.def = pending
		}
		v.oses[name] = ov
	}
	return v
}

func osnameOf(d dict) string {
	s, _ := d["osname"].Value().(string)
	return s
}

// refresh reads the deployments and updates every property, exporting OS objects for new
// stateroots and removing those of vanished ones; changes emit PropertiesChanged.
func (s *Server) refresh(ctx context.Context) error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	deps, bootedIdx, err := s.backend.Deployments(ctx)
	if err != nil {
		return err
	}
	v := computeView(deps, bootedIdx)
	s.sysrootProps.update(SysrootIface, map[string]any{"Deployments": v.deployments, "Booted": v.booted})

	s.mu.Lock()
	defer s.mu.Unlock()
	for name, ov := range v.oses {
		o, ok := s.oses[name]
		if !ok {
			if o, err = s.exportOS(name, ov); err != nil {
				return err
			}
			s.oses[name] = o
			s.emitInterfacesAdded(o)
			continue
		}
		o.props.update(OSIface, ov.properties())
	}
	for name, o := range s.oses {
		if _, ok := v.oses[name]; !ok {
			s.unexportOS(o)
			delete(s.oses, name)
		}
	}
	return nil
}

func (ov osView) properties() map[string]any {
	return map[string]any{"BootedDeployment": ov.booted, "DefaultDeployment": ov.def, "RollbackDeployment": ov.rollback}
}
