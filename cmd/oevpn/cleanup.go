package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/tunnel"
)

// cmdCleanup removes the routing that an endpoint killed without a clean
// shutdown left behind: its rules and the prohibit routes that keep what it
// protects from leaving in the clear while it is down. It is for a host
// where that endpoint will not run again; `oevpn up` replaces them itself.
func cmdCleanup(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cleanup")
	path := fs.String("c", "", "configuration `file` (TOML) of the endpoint that was killed")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *path == "" || len(rest) > 0 {
		return fmt.Errorf("%w: oevpn cleanup -c FILE", errUsage)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	in := cfg.Interface
	if in.Mode != config.ModeTUN {
		return nil // netstack mode touches no routing
	}
	// Never while the endpoint runs: its lock says so.
	if err := prepareControlDir(filepath.Dir(in.Control), -1); err != nil {
		return err
	}
	lock, err := lockInstance(in.Control, in.Name)
	if err != nil {
		return err
	}
	defer lock.Close()
	n, err := tunnel.RemoveRouting(tunnel.OSConfig{Name: in.Name, Mark: uint32(*in.Fwmark), Table: in.Table})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed %d routing rules and routes of table %d\n", n, in.Table)
	return nil
}
