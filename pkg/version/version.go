// Package version holds the build's version, set at link time by the Makefile.
package version

import "runtime/debug"

// Version is overridden with -ldflags "-X layerd.dev/layerd/pkg/version.Version=...".
var Version = "dev"

// Commit returns the VCS revision embedded by the Go toolchain, or "unknown".
func Commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return "unknown"
}
