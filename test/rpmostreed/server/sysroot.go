package server

import (
	"fmt"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// sysrootObject is org.projectatomic.rpmostree1.Sysroot.
type sysrootObject struct{ s *Server }

// RegisterClient records the caller (option "id") until it leaves the bus or unregisters.
func (o sysrootObject) RegisterClient(sender dbus.Sender, options map[string]dbus.Variant) *dbus.Error {
	if err := o.s.takeNoReply(); err != nil {
		return err
	}
	id := vardict(options).str("id")
	o.s.mu.Lock()
	o.s.clients[string(sender)] = id
	o.s.mu.Unlock()
	o.s.log.Info("client registered", zap.String("sender", string(sender)), zap.String("id", id))
	return nil
}

// UnregisterClient ends the caller's registration.
func (o sysrootObject) UnregisterClient(sender dbus.Sender, _ map[string]dbus.Variant) *dbus.Error {
	o.s.mu.Lock()
	delete(o.s.clients, string(sender))
	o.s.mu.Unlock()
	o.s.log.Info("client unregistered", zap.String("sender", string(sender)))
	return nil
}

// Reload re-reads the deployments and emits property changes before replying.
func (o sysrootObject) Reload() *dbus.Error {
	if err := o.s.takeNoReply(); err != nil {
		return err
	}
	if err := o.s.refresh(o.s.ctx); err != nil {
		return dbus.MakeFailedError(err)
	}
	return nil
}

// ReloadConfig is Reload; the stand-in has no configuration files.
func (o sysrootObject) ReloadConfig() *dbus.Error { return o.Reload() }

// GetOS returns the OS object of a stateroot; "" means the booted one.
func (o sysrootObject) GetOS(name string) (dbus.ObjectPath, *dbus.Error) {
	if err := o.s.takeNoReply(); err != nil {
		return "", err
	}
	if name == "" {
		v, err := o.s.sysrootProps.Get(SysrootIface, "Booted")
		if err != nil {
			return "", err
		}
		return v.Value().(dbus.ObjectPath), nil
	}
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	if obj, ok := o.s.oses[name]; ok {
		return obj.path, nil
	}
	return "", dbus.NewError(ErrNameNotFound, []any{fmt.Sprintf("OS name %q not found", name)})
}

// Clients returns the registered clients: unique name → id.
func (s *Server) Clients() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.clients))
	for k, v := range s.clients {
		out[k] = v
	}
	return out
}

// watchNames follows NameOwnerChanged: a unique name that leaves the bus loses its
// registration and abandons a transaction it created but never started.
func (s *Server) watchNames() error {
	ch := make(chan *dbus.Signal, 64)
	s.conn.Signal(ch)
	err := s.conn.AddMatchSignal(
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
	)
	if err != nil {
		return err
	}
	go func() {
		for sig := range ch {
			var name, oldOwner, newOwner string
			if sig.Name != "org.freedesktop.DBus.NameOwnerChanged" || dbus.Store(sig.Body, &name, &oldOwner, &newOwner) != nil {
				continue
			}
			if newOwner == "" && len(name) > 0 && name[0] == ':' {
				s.nameVanished(name)
			}
		}
	}()
	return nil
}

func (s *Server) nameVanished(name string) {
	s.mu.Lock()
	delete(s.clients, name)
	active := s.active
	s.mu.Unlock()
	if active != nil {
		active.abandonIfCaller(name)
	}
}

// clientDescription is the Transaction.InitiatingClientDescription of a caller.
func (s *Server) clientDescription(sender string) string {
	s.mu.Lock()
	id, ok := s.clients[sender]
	s.mu.Unlock()
	if !ok || id == "" {
		id = "unknown"
	}
	desc := fmt.Sprintf("client(id:%s dbus:%s", id, sender)
	var uid uint32
	if err := s.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixUser", 0, sender).Store(&uid); err == nil {
		desc += fmt.Sprintf(" uid:%d", uid)
	}
	return desc + ")"
}
