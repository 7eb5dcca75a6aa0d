package softhsmtest_test

import (
	"bufio"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// sealedDaemon is a `signerd serve` started with a sealed configuration.
type sealedDaemon struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{} // closed once the process has exited; err is then its exit
	err  error
}

// startSealed starts `signerd serve --config cfgPath` and waits until it says it is sealed.
func startSealed(t *testing.T, cfgPath string) *sealedDaemon {
	t.Helper()
	d := &sealedDaemon{cmd: exec.Command(signerdBin, "serve", "--config", cfgPath), log: &lockedBuffer{}, done: make(chan struct{})}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sealed := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.log.add(sc.Text())
			if strings.Contains(sc.Text(), "sealed: waiting") {
				close(sealed)
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case <-sealed:
	case <-d.done:
		t.Fatalf("signerd serve exited before waiting sealed: %v\n%s", d.err, d.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("signerd serve did not say it is sealed in 60s\n%s", d.log)
	}
	return d
}

// wait returns how the daemon exited, once it has.
func (d *sealedDaemon) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(20 * time.Second):
		t.Fatalf("signerd serve did not exit in 20s\n%s", d.log)
		return nil
	}
}

// interrupt stops the daemon as systemd would and returns how it exited.
func (d *sealedDaemon) interrupt(t *testing.T) error {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	return d.wait(t)
}

// unsealWith runs `signerd unseal --socket sock` with pin on its standard input.
func unsealWith(sock, pin string) (string, error) {
	cmd := exec.Command(signerdBin, "unseal", "--socket", sock, "--timeout", "2m")
	cmd.Stdin = strings.NewReader(pin + "\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var unsealedRE = regexp.MustCompile(`signerd serving on (\S+) with 1 keys from token "e2e"`)

// TestSealedStart: with hsm.unseal_socket and no PIN source, the daemon opens no token and no listener
// until an administrator sends the PIN to the socket (`signerd unseal`, the PIN on standard input as a
// secret store would pipe it). A wrong PIN is refused with its reason and leaves the daemon waiting;
// the right one starts it, the administrator is told where it serves, and callers sign. The PIN
// appears in no output or log. The same sealed config serves `signerd keys`, which reads the PIN from
// standard input, and a daemon stopped while sealed exits cleanly and removes its socket.
func TestSealedStart(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}})
	in.stop() // started with the PIN file; its token, keys and certificates are reused
	good, err := os.ReadFile(in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are limited to 107 bytes: a short directory of its own.
	sockDir, err := os.MkdirTemp("", "unseal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s")
	pinLine := "  pin_file: " + in.dir + "/pin\n"
	if !strings.Contains(string(good), pinLine) {
		t.Fatalf("config has no %q", pinLine)
	}
	// A fixed port, so that the test can see nothing listens there while the daemon is sealed.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	sealedCfg := strings.Replace(string(good), pinLine, "  unseal_socket: "+sock+"\n", 1)
	sealedCfg = strings.Replace(sealedCfg, "listen: 127.0.0.1:0\n", "listen: "+addr+"\n", 1)
	cfgPath := filepath.Join(in.dir, "sealed.yaml")
	writeConfig(t, cfgPath, sealedCfg)
	outputs := []string{}

	t.Run("keys command reads the PIN from stdin", func(t *testing.T) {
		cmd := exec.Command(signerdBin, "keys", "list", "--config", cfgPath)
		cmd.Stdin = strings.NewReader(in.tok.PIN + "\n")
		out, err := cmd.CombinedOutput()
		outputs = append(outputs, string(out))
		if err != nil || !strings.Contains(string(out), "es256") {
			t.Fatalf("signerd keys list = %v\n%s", err, out)
		}
		cmd = exec.Command(signerdBin, "keys", "list", "--config", cfgPath)
		cmd.Stdin = strings.NewReader("")
		out, err = cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no PIN given") {
			t.Fatalf("signerd keys list without a PIN = %v\n%s", err, out)
		}
	})

	t.Run("unseal", func(t *testing.T) {
		d := startSealed(t, cfgPath)
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("a sealed daemon listens on %s:\n%s", addr, d.log)
		}
		if fi, err := os.Stat(sock); err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("unseal socket: %v, %v", fi, err)
		}

		out, err := unsealWith(sock, "0000000000000000")
		outputs = append(outputs, out)
		if err == nil || !strings.Contains(out, "wrong PIN") {
			t.Fatalf("unseal with a wrong PIN = %v\n%s", err, out)
		}
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("a wrong PIN closed the unseal socket: %v\n%s", err, d.log)
		}

		out, err = unsealWith(sock, in.tok.PIN)
		outputs = append(outputs, out)
		m := unsealedRE.FindStringSubmatch(out)
		if err != nil || m == nil || m[1] != addr {
			t.Fatalf("unseal = %v\n%s\ndaemon:\n%s", err, out, d.log)
		}
		if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("unseal socket left after the start: %v", err)
		}
		in.addr = m[1]
		resp, err := in.dial(t, in.svc).Sign(ctxT(t), &signerv1.SignRequest{Key: "es256",
			Input: &signerv1.SignRequest_Message{Message: []byte("unsealed")}})
		if err != nil || len(resp.GetSignature()) == 0 {
			t.Fatalf("Sign after unseal = %v", err)
		}
		if err := d.interrupt(t); err != nil {
			t.Fatalf("signerd serve exited with %v\n%s", err, d.log)
		}
		outputs = append(outputs, d.log.String())
		for _, want := range []string{"wrong PIN; still sealed", "unsealed: logged in"} {
			if !strings.Contains(d.log.String(), want) {
				t.Errorf("daemon log lacks %q:\n%s", want, d.log)
			}
		}
	})

	// A start that fails after the token opened is told to the administrator who unsealed, and ends
	// the daemon.
	t.Run("start fails after unseal", func(t *testing.T) {
		broken := filepath.Join(in.dir, "sealed-broken.yaml")
		writeConfig(t, broken, strings.Replace(sealedCfg, "keys: [es256]\n      operations: [sign]\n", "keys: [ghost]\n      operations: [sign]\n", 1))
		d := startSealed(t, broken)
		out, err := unsealWith(sock, in.tok.PIN)
		outputs = append(outputs, out)
		if err == nil || !strings.Contains(out, "policy.grants[1].keys[0]") {
			t.Fatalf("unseal of a daemon whose start fails = %v\n%s", err, out)
		}
		if err := d.wait(t); err == nil {
			t.Fatalf("signerd serve exited cleanly after a failed start\n%s", d.log)
		}
		outputs = append(outputs, d.log.String())
	})

	t.Run("stopped while sealed", func(t *testing.T) {
		d := startSealed(t, cfgPath)
		if err := d.interrupt(t); err != nil {
			t.Fatalf("signerd serve stopped while sealed exited with %v\n%s", err, d.log)
		}
		if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("unseal socket left after the stop: %v", err)
		}
		if out, err := unsealWith(sock, in.tok.PIN); err == nil {
			t.Errorf("unseal with no daemon succeeded: %s", out)
		}
	})

	for i, out := range outputs {
		if strings.Contains(out, in.tok.PIN) {
			t.Errorf("output %d contains the PIN:\n%s", i, out)
		}
	}
}
