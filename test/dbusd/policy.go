package dbusd

// systemConf is a system-bus configuration modelled on Debian's
// /usr/share/dbus-1/system.conf, minus <user>, <fork>, <pidfile>, service
// activation and syslog (notes §3). %[1]s is the socket path, %[2]s the
// policy include directory.
const systemConf = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=%[1]s</listen>

  <policy context="default">
    <!-- Without this a system bus accepts only the daemon's own uid. -->
    <allow user="*"/>

    <deny own="*"/>
    <deny send_type="method_call"/>

    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>

    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>

    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Containers1"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>

  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>

  <includedir>%[2]s</includedir>
</busconfig>
`

// rpmOstreePolicy has the rules of rpm-ostree's
// src/daemon/org.projectatomic.rpmostree1.conf: root may own the name and
// send it anything; everyone else may use Introspectable, ObjectManager,
// Peer, Properties.Get/GetAll, the whole OS interface and Sysroot.GetOS.
// Everything else is decided by polkit inside the daemon.
const rpmOstreePolicy = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.projectatomic.rpmostree1"/>
    <allow send_destination="org.projectatomic.rpmostree1"/>
  </policy>

  <policy context="default">
    <deny send_destination="org.projectatomic.rpmostree1"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.freedesktop.DBus.ObjectManager"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.freedesktop.DBus.Peer"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.projectatomic.rpmostree1.OS"/>
    <allow send_destination="org.projectatomic.rpmostree1"
           send_interface="org.projectatomic.rpmostree1.Sysroot" send_member="GetOS"/>
  </policy>
</busconfig>
`
