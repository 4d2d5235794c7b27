package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/internal/lab"
)

// TestCLIHelperProcess is not a test: it is oevpn, for the shells the
// completion tests run (OEVPN_CLI_HELPER=1, arguments after "--").
func TestCLIHelperProcess(t *testing.T) {
	if os.Getenv("OEVPN_CLI_HELPER") != "1" {
		t.Skip("run by the completion tests as oevpn")
	}
	i := slices.Index(os.Args, "--")
	os.Exit(run(os.Args[i+1:], os.Stdout, os.Stderr))
}

// oevpnOnPath writes an executable "oevpn" that runs this test binary as
// oevpn (TestCLIHelperProcess) and returns its directory.
func oevpnOnPath(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\nOEVPN_CLI_HELPER=1 exec %q -test.run='^TestCLIHelperProcess$' -- \"$@\"\n", exe)
	if err := os.WriteFile(filepath.Join(dir, "oevpn"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCompletionScripts: each shell's script names every command and
// every flag the help knows, and each parses in its shell where that
// shell is installed.
func TestCompletionScripts(t *testing.T) {
	cs := commands()
	if len(cs) < 15 {
		t.Fatalf("only %d commands", len(cs))
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, script, errOut := runCLI("completion", sh)
		if code != 0 || errOut != "" {
			t.Fatalf("completion %s: exit %d %q", sh, code, errOut)
		}
		for _, c := range cs {
			if !strings.Contains(script, c.name) {
				t.Errorf("%s: no command %s", sh, c.name)
			}
			for _, f := range c.flags {
				var want string
				switch sh {
				case "bash":
					want = "-" + f.Name + " | --" + f.Name + ")"
					if !strings.Contains(script, want) {
						want = "-" + f.Name // a flag without a value: in the flags list
					}
				case "zsh":
					want = "'-" + f.Name + "["
				case "fish":
					want = " -o " + f.Name + " "
					if len(f.Name) == 1 {
						want = " -s " + f.Name + " "
					}
				}
				if !strings.Contains(script, want) {
					t.Errorf("%s: %s has no flag %s (%q)", sh, c.name, f.Name, want)
				}
			}
		}
		check := map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}}[sh]
		lab.RequireTools(t, check[0])
		cmd := exec.Command(check[0], check[1:]...)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s does not parse its script: %v\n%s", sh, err, out)
		}
	}
	if code, _, errOut := runCLI("completion", "tcsh"); code != 2 || !strings.Contains(errOut, `no completion for shell "tcsh"`) {
		t.Errorf("completion tcsh: exit %d %q", code, errOut)
	}
}

// TestCompletionBash sources the bash script and runs its function as
// bash does on TAB: commands, a command's flags (single and double dash),
// a flag's words, and the configured peers of a running endpoint for
// down PEER.
func TestCompletionBash(t *testing.T) {
	lab.RequireTools(t, "bash")
	dir, scriptPath := completionScript(t, "bash", "oevpn.bash")

	// A running endpoint with two configured peers.
	_, sock := startOffice(t, dir, `
[[peer]]
name = "lab"
address = "127.0.0.2"
ike_port = 9
natt_port = 9
auth = "psk"
psk = "a pre-shared key of some length"
local = ["10.9.0.1"]
remote = ["10.3.0.0/16"]
start = "none"
`)
	bin := filepath.Join(oevpnOnPath(t), "oevpn")

	for _, tt := range []struct {
		line string // the command line up to the cursor
		want []string
	}{
		{"oevpn st", []string{"status"}},
		{"oevpn ", commandNames(commands())},
		{"oevpn up -", []string{"-c", "-json", "-s"}},
		{"oevpn up --j", []string{"--json"}},
		{"oevpn keygen -t ", []string{"ed25519", "ecdsa", "rsa"}},
		{"oevpn completion ", []string{"bash", "zsh", "fish"}},
		{"oevpn help dn", []string{"dns-records"}},
		{"oevpn down -s " + sock + " ", []string{"lab", "office"}},
		{"oevpn up -s " + sock + " o", []string{"office"}},
		{"oevpn check ", nil},
	} {
		n, quoted := shellWords(tt.line, bin)
		prog := fmt.Sprintf("source %q\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_oevpn\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n",
			scriptPath, quoted, n-1)
		out, ok := runShell(t, tt.line, "bash", "--norc", "--noprofile", "-c", prog)
		if !ok {
			continue
		}
		got := strings.Fields(out)
		slices.Sort(got)
		want := slices.Clone(tt.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%q<TAB>: %q, want %q", tt.line, got, want)
		}
	}
}

// TestCompletionZsh runs the zsh script's functions with the completion
// system's builtins (_describe, _arguments, compadd) replaced by ones that
// print what they were given: zsh's line editor does not start without a
// terminal, but what the script asks of it is what can go wrong.
func TestCompletionZsh(t *testing.T) {
	lab.RequireTools(t, "zsh")
	dir, scriptPath := completionScript(t, "zsh", "_oevpn")
	_, sock := startOffice(t, dir, "")
	bin := filepath.Join(oevpnOnPath(t), "oevpn")
	const stubs = `compdef() { :; }
_describe() { print -rl -- "describe $1" ${(P)2}; }
_arguments() { print -rl -- "arguments" "$@"; local a=${@[-1]}; [[ $a == '*:peer:'* ]] && ${a#*:peer:}; return 0; }
compadd() { [[ $1 == -a ]] && print -rl -- "compadd" ${(P)2}; }
`
	for _, tt := range []struct {
		line string   // the command line up to the cursor
		want []string // lines the output must have
		not  []string // lines it must not have
	}{
		{"oevpn st", []string{"describe command", "status:Show a running endpoint"}, nil},
		{"oevpn up -", []string{"arguments", "-json[with PEER\\: print JSON]", "*:peer:_oevpn_peers"}, nil},
		{"oevpn down -s " + sock + " ", []string{"compadd", "office"}, nil},
		{"oevpn status ", []string{"arguments"}, []string{"compadd", "*:peer:_oevpn_peers"}},
	} {
		n, quoted := shellWords(tt.line, bin)
		prog := fmt.Sprintf("%ssource %q\nwords=(%s)\nCURRENT=%d\n_oevpn\n", stubs, scriptPath, quoted, n)
		out, ok := runShell(t, tt.line, "zsh", "-f", "-c", prog)
		if !ok {
			continue
		}
		lines := strings.Split(out, "\n")
		for _, w := range tt.want {
			if !slices.Contains(lines, w) {
				t.Errorf("%q<TAB>: no line %q in\n%s", tt.line, w, out)
			}
		}
		for _, w := range tt.not {
			if slices.Contains(lines, w) {
				t.Errorf("%q<TAB>: line %q in\n%s", tt.line, w, out)
			}
		}
	}
}

// TestCompletionFish asks fish itself what it completes, where fish is
// installed.
func TestCompletionFish(t *testing.T) {
	lab.RequireTools(t, "fish")
	dir, scriptPath := completionScript(t, "fish", "oevpn.fish")
	_, sock := startOffice(t, dir, "")
	bin := filepath.Join(oevpnOnPath(t), "oevpn")
	for _, tt := range []struct {
		line string
		want []string
	}{
		{"oevpn st", []string{"status"}},
		{bin + " down -s " + sock + " ", []string{"office"}},
		{"oevpn keygen -t ", []string{"ed25519", "ecdsa", "rsa"}},
		{"oevpn completion ", []string{"bash", "zsh", "fish"}},
		{"oevpn status -", []string{"-c", "-json", "-s"}},
	} {
		out, err := exec.Command("fish", "--no-config", "-c", fmt.Sprintf("source %q; complete -C %q", scriptPath, tt.line)).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tt.line, err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			w, _, _ := strings.Cut(l, "\t")
			got = append(got, w)
		}
		for _, w := range tt.want {
			if !slices.Contains(got, w) {
				t.Errorf("%q<TAB>: %q lacks %q", tt.line, got, w)
			}
		}
	}
}

// completionScript writes oevpn's completion script for shell to a new
// directory as name and returns the directory and the script's path.
func completionScript(t *testing.T, shell, name string) (dir, path string) {
	t.Helper()
	_, script, _ := runCLI("completion", shell)
	dir = t.TempDir()
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// shellWords returns how many words a shell sees in line (one more, empty,
// after a trailing space: the word being completed) and them quoted for
// an array assignment, the first replaced by bin.
func shellWords(line, bin string) (n int, quoted string) {
	words := strings.Fields(line)
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	words[0] = bin
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	return len(words), strings.Join(q, " ")
}

// runShell runs a shell command for the completion of line and returns
// its output; a failure or anything on standard error is an error of the
// test, and ok is false.
func runShell(t *testing.T, line string, args ...string) (out string, ok bool) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("%q: %v %s", line, err, stderr.String())
		return "", false
	}
	return stdout.String(), true
}

func commandNames(cs []command) []string {
	var l []string
	for _, c := range cs {
		l = append(l, c.name)
	}
	return l
}

// TestGeneratedFromHelp: a command added to commandHelp (as reload will
// be) appears in the man page and every completion script by itself.
func TestGeneratedFromHelp(t *testing.T) {
	commandHelp["frobnicate"] = "oevpn frobnicate [-s SOCKET | -c FILE] PEER\n\nFrobnicate a peer."
	defer delete(commandHelp, "frobnicate")
	if _, page, _ := runCLI("help", "--man"); !strings.Contains(page, ".SS frobnicate\n") || !strings.Contains(page, "Frobnicate a peer.") {
		t.Error("the man page lacks the new command")
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if _, script, _ := runCLI("completion", sh); !strings.Contains(script, "frobnicate") {
			t.Errorf("the %s completion lacks the new command", sh)
		}
	}
	if code, out, _ := runCLI("completion", "-h"); code != 0 || !strings.HasPrefix(out, "Usage: oevpn completion bash|zsh|fish") || strings.Contains(out, "-peers") {
		t.Errorf("completion -h: %d %q", code, out)
	}
}
