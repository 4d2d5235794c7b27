package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/tunnel"
)

// oevpn reload (and SIGHUP): the endpoint reads its configuration file
// again and applies what can change while it runs, as `wg syncconf` and
// `swanctl --load-all` do: [[peer]]s (added, removed, changed; an
// unchanged peer keeps its SAs) and [policy]. Every other section is
// what the device, sockets and services were made from: a change there is
// refused, naming the file, line and key, and nothing is applied.

// running is the configuration the endpoint runs, which reload replaces.
type running struct {
	mu  sync.Mutex // serializes reloads
	cfg *config.Config
}

// ReloadResult is what POST /reload returns: the file read, and what
// changed.
type ReloadResult struct {
	Config string `json:"config"`
	tunnel.ReloadReport
}

// reload reads the endpoint's configuration file again and applies it.
// Errors name the file (and for a key, its line); on error the endpoint
// runs on as before.
func (ep *endpoint) reload() (ReloadResult, error) {
	ep.running.mu.Lock()
	defer ep.running.mu.Unlock()
	old := ep.running.cfg
	res := ReloadResult{Config: old.Path}
	cfg, err := config.Load(old.Path)
	if err != nil {
		return res, err
	}
	if err := refuseLive(old, cfg); err != nil {
		return res, err
	}
	nc := ep.Config()
	if nc.Peers, err = peersConfig(cfg, nc.Peers); err != nil {
		return res, err
	}
	nc.Policy = policyConfig(cfg)
	rep, err := ep.Reload(nc)
	if err != nil {
		return res, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	ep.running.cfg = cfg
	res.ReloadReport = rep
	return res, nil
}

// refuseLive returns an error naming the first key that differs between
// the running configuration and the one read again and cannot change
// while the endpoint runs: everything but [[peer]] and [policy] (whose
// opportunistic classes cannot be turned on or off).
func refuseLive(old, cfg *config.Config) error {
	if old.Policy.Enabled() != cfg.Policy.Enabled() {
		key := "policy"
		o, n := old.Policy, cfg.Policy
		switch {
		case !slices.Equal(o.PrivateOrClear, n.PrivateOrClear):
			key += ".private-or-clear"
		case !slices.Equal(o.Private, n.Private):
			key += ".private"
		case !slices.Equal(o.ClearOrPrivate, n.ClearOrPrivate):
			key += ".clear-or-private"
		}
		return cfg.KeyError(key, notLive("it turns opportunism on or off"))
	}
	if len(old.Policy.Clear) == 0 && len(cfg.Policy.Clear) > 0 && old.Interface.Mode == config.ModeTUN &&
		!old.Policy.Enabled() && !old.AutoVPN.Enabled() {
		// The clear path (raw sockets or the forwarder) is opened at
		// start, only when something may need it.
		return cfg.KeyError("policy.clear", notLive("the first clear prefix needs the clear path, opened at start"))
	}
	sections := []struct {
		key      string
		old, new any
	}{
		{"interface", old.Interface, cfg.Interface},
		{"sa", old.SAs, cfg.SAs},
		{"opportunism", old.OE, cfg.OE},
		{"autovpn", old.AutoVPN, cfg.AutoVPN},
		{"proxy", old.Proxy, cfg.Proxy},
		{"forward", old.Forwards, cfg.Forwards},
	}
	for _, s := range sections {
		if key, ok := differingKey(s.key, reflect.ValueOf(s.old), reflect.ValueOf(s.new)); ok {
			return cfg.KeyError(key, notLive(""))
		}
	}
	return nil
}

// notLive is the refusal of a key that cannot change while oevpn runs.
func notLive(what string) error {
	if what != "" {
		what = " (" + what + ")"
	}
	return fmt.Errorf("%w%s: restart oevpn to apply it (reload applies [[peer]] and [policy])", tunnel.ErrReloadRefused, what)
}

// differingKey compares a and b, one section (a struct, or a list of
// tables) of two configurations: for a struct, the key of the first field
// that differs ("interface.name"; the section itself for what was read
// from the files the keys name); for a list of tables, that of its first
// table that differs ("sa[1].spi_in", or "sa" for one removed); for
// anything else, the section.
func differingKey(section string, a, b reflect.Value) (string, bool) {
	if a.Kind() == reflect.Slice && a.Type().Elem().Kind() == reflect.Struct {
		for i := range max(a.Len(), b.Len()) {
			if i >= b.Len() {
				return section, true
			}
			ai := reflect.New(a.Type().Elem()).Elem()
			if i < a.Len() {
				ai = a.Index(i)
			}
			if key, ok := differingKey(fmt.Sprintf("%s[%d]", section, i), ai, b.Index(i)); ok {
				return key, true
			}
		}
		return "", false
	}
	if a.Kind() != reflect.Struct {
		return section, !reflect.DeepEqual(a.Interface(), b.Interface())
	}
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if !f.IsExported() || reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			return section, true
		}
		return section + "." + tag, true
	}
	return "", false
}

// handleReload serves POST /reload.
func (ep *endpoint) handleReload(mux *http.ServeMux) {
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		res, err := ep.reload()
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res.nonNil())
	})
}

// nonNil returns r with empty lists for nil ones, so that the JSON has
// arrays, never null.
func (r ReloadResult) nonNil() ReloadResult {
	for _, l := range []*[]string{&r.Added, &r.Removed, &r.Changed, &r.Unchanged, &r.Ended, &r.Routes} {
		if *l == nil {
			*l = []string{}
		}
	}
	return r
}

// reloadOnHUP is the SIGHUP handler: reload, and log the outcome (the node
// logs what changed).
func (ep *endpoint) reloadOnHUP(log interface {
	Info(string, ...any)
	Error(string, ...any)
}) {
	log.Info("SIGHUP: reloading the configuration", "config", ep.running.cfg.Path)
	if _, err := ep.reload(); err != nil {
		log.Error("reload failed: still running the previous configuration", "err", err)
	}
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, _, err := controlCommand("reload", 0, "", args, stderr)
	if err != nil {
		return err
	}
	b, err := controlPost(sock, "/reload")
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(b)
		return err
	}
	var res ReloadResult
	if err := json.Unmarshal(b, &res); err != nil {
		return errors.New("reload: the endpoint's answer does not parse: " + err.Error())
	}
	printReload(stdout, res)
	return nil
}

// printReload prints what a reload changed, one line a change.
func printReload(w io.Writer, r ReloadResult) {
	fmt.Fprintf(w, "reloaded %s\n", printable(r.Config))
	for _, l := range []struct {
		names []string
		what  string
	}{
		{r.Added, "added"},
		{r.Removed, "removed: its SAs deleted"},
		{r.Changed, "changed: its SAs deleted, negotiated again"},
		{r.Unchanged, "unchanged: its SAs kept"},
	} {
		for _, n := range l.names {
			fmt.Fprintf(w, "  peer %s: %s\n", printable(n), l.what)
		}
	}
	if r.Policy {
		fmt.Fprintf(w, "  policy: changed, %d opportunistic verdict(s) flushed\n", r.Flushed)
	}
	for _, n := range r.Ended {
		fmt.Fprintf(w, "  peer %s: ended, the policy no longer makes its address opportunistic\n", printable(n))
	}
	for _, p := range r.Routes {
		fmt.Fprintf(w, "  route %s: added into the device\n", printable(p))
	}
}
