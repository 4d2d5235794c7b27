package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const containerRecipe = "../../docs/service/Dockerfile"

// TestContainerBinaryStage builds the binary as the Dockerfile's build stage
// does and checks what the empty image needs of it: static (no
// interpreter, no shared libraries), and it runs. With a Docker daemon at
// hand it builds the whole image too.
func TestContainerBinaryStage(t *testing.T) {
	recipe, err := os.ReadFile(containerRecipe)
	if err != nil {
		t.Fatal(err)
	}
	var build string
	for _, l := range strings.Split(string(recipe), "\n") {
		if strings.HasPrefix(l, "RUN CGO_ENABLED=0 go build ") {
			build = strings.TrimPrefix(l, "RUN ")
		}
	}
	if build == "" || !strings.Contains(build, "-o /oevpn ./cmd/oevpn") {
		t.Fatalf("no binary stage in %s", containerRecipe)
	}
	bin := filepath.Join(t.TempDir(), "oevpn")
	cmd := exec.Command("sh", "-c", strings.Replace(build, "-o /oevpn", "-o "+bin, 1))
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader: it cannot run on an empty image")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "oevpn ") {
		t.Errorf("%s version: %v %s", bin, err, out)
	}
	if exec.Command("docker", "info").Run() != nil {
		t.Log("no Docker daemon here: the image build itself is not tried")
		return
	}
	build2 := exec.Command("docker", "build", "-q", "-f", "docs/service/Dockerfile", "-t", "oevpn-test:latest", ".")
	build2.Dir = "../.."
	if out, err := build2.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	defer exec.Command("docker", "rmi", "oevpn-test:latest").Run()
	if out, err := exec.Command("docker", "run", "--rm", "--network", "none", "oevpn-test:latest", "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "oevpn ") {
		t.Errorf("docker run oevpn version: %v %s", err, out)
	}
}
