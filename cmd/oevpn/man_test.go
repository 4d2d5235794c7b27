package main

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/internal/lab"
)

// TestManPage: oevpn(8) has a section for every command with its synopsis
// and every flag the help knows, is well-formed roff, and, where groff is
// installed, renders without a warning (-ww: all of them) to a page that
// shows them.
func TestManPage(t *testing.T) {
	code, page, errOut := runCLI("help", "--man")
	if code != 0 || errOut != "" {
		t.Fatalf("help --man: exit %d %q", code, errOut)
	}
	cs := commands()
	for _, c := range cs {
		if !strings.Contains(page, ".SS "+c.name+"\n") {
			t.Errorf("no section for %s", c.name)
		}
		if syn := manOptions(strings.Split(c.synopsis(), "\n")[0]); !strings.Contains(page, syn+"\n") {
			t.Errorf("%s: no synopsis %q", c.name, syn)
		}
		for _, f := range c.flags {
			if !regexp.MustCompile(`(?m)^\.BI? \\-` + regexp.QuoteMeta(f.Name) + `( |$)`).MatchString(page) {
				t.Errorf("%s: no flag -%s", c.name, f.Name)
			}
		}
	}
	// The requests the page may use, and no text line that roff would
	// take for one.
	known := map[string]bool{`.\"`: true, ".TH": true, ".SH": true, ".SS": true, ".PP": true, ".TP": true,
		".B": true, ".BI": true, ".I": true, ".RI": true, ".BR": true, ".nf": true, ".fi": true}
	for i, l := range strings.Split(strings.TrimSuffix(page, "\n"), "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			req, _, _ := strings.Cut(l, " ")
			if !known[req] {
				t.Errorf("line %d: unknown request %q", i+1, l)
			}
		}
		for _, r := range l {
			if r > 127 {
				t.Errorf("line %d: not ASCII: %q", i+1, l)
				break
			}
		}
	}

	lab.RequireTools(t, "groff")
	var out, warn bytes.Buffer
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(page), &out, &warn
	cmd.Env = append(cmd.Environ(), "MANWIDTH=80")
	if err := cmd.Run(); err != nil || warn.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, warn.String())
	}
	// What the reader sees: plain text, without the overstrikes.
	text := regexp.MustCompile(".\b").ReplaceAllString(out.String(), "")
	text = regexp.MustCompile(`\x1b\[[0-9;]*m`).ReplaceAllString(text, "")
	for _, c := range cs {
		if !strings.Contains(text, "oevpn "+c.name) {
			t.Errorf("the rendered page lacks %q", "oevpn "+c.name)
		}
		for _, f := range c.flags {
			if !strings.Contains(text, "-"+f.Name) {
				t.Errorf("the rendered page lacks -%s of %s", f.Name, c.name)
			}
		}
	}
	for _, want := range []string{"OEVPN(8)", "A\u2192B", "oevpn up [-s SOCKET | -c FILE] [--json] PEER"} {
		if !strings.Contains(text, want) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
}
