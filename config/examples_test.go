package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signerd/signerd/config"
)

// TestExampleConfigs loads every example in configs/ after pointing its file paths at files that exist
// here, so that the examples stay valid as the schema changes.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	dir := t.TempDir()
	// The examples take the PIN from systemd's credentials directory.
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if err := os.WriteFile(filepath.Join(dir, "pin"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			body := string(b)
			for _, line := range strings.Split(body, "\n") {
				k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
				if !ok || !strings.HasSuffix(k, "_file") || !strings.HasPrefix(v, "/") || k == "file" || k == "lock_file" {
					continue
				}
				local := filepath.Join(dir, filepath.Base(v))
				if err := os.WriteFile(local, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
				body = strings.Replace(body, v, local, 1)
			}
			// The lock file's directory must exist; point it here.
			body = strings.ReplaceAll(body, "/var/lib/signerd/token.lock", filepath.Join(dir, "token.lock"))
			if _, err := config.Parse([]byte(body)); err != nil {
				t.Errorf("config.Parse(%s) = %v", f, err)
			}
		})
	}
}
