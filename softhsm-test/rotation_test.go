package softhsmtest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/devca"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

// shortPeriods makes rotation observable in seconds: the JWKS may be cached 2s, refreshes run every
// second, and svc is an administrator.
func shortPeriods(cfg string) string {
	cfg = strings.Replace(cfg, "jwks_max_age: 90s", "jwks_max_age: 2s", 1)
	cfg = strings.Replace(cfg, "policy:\n", "policy:\n  admins: [spiffe://test/svc]\n", 1)
	// No SignJWT: a key's grace must cover the longest token TTL granted for it (5m by default), and a
	// key with jwt rules may not sign raw data. The tests mint their tokens with mintJWT instead.
	cfg = strings.Replace(cfg, "operations: [sign, verify, public_key, sign_jwt, verify_jwt]\n",
		"operations: [sign, verify, public_key, verify_jwt]\n", 1)
	return cfg + "refresh_interval: 1s\n"
}

// mintJWT signs a token valid for ttl with key's active version through the daemon at addr, as a
// service using the client package's SigningMethod does (a raw Sign), and returns it with its kid.
func mintJWT(t *testing.T, in *instance, addr, key string, ttl time.Duration) (token, kid string) {
	t.Helper()
	c, err := client.Dial(addr, client.Options{TLSConfig: in.clientTLS(in.svc)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k, err := c.Key(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, err = k.NewToken(jwt.MapClaims{"sub": "x", "iat": now.Unix(), "exp": now.Add(ttl).Unix()}).SignedString(k)
	if err != nil {
		t.Fatalf("sign a token with %s: %v", key, err)
	}
	return token, k.Kid()
}

// daemonView is one daemon as a verifier and signer sees it.
type daemonView struct {
	name    string
	addr    string
	c       signerv1.SignerClient
	httpURL string
}

// second starts another `signerd serve` on the instance's token, with its own audit trail.
func (in *instance) second(t *testing.T) (daemonView, func()) {
	t.Helper()
	b, err := os.ReadFile(in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(in.dir, "second.yaml")
	writeConfig(t, cfg, strings.Replace(string(b), "/audit.log", "/audit-second.log", 1))
	addr, httpURL, _, stop, _ := serve(t, cfg)
	peer := *in
	peer.addr = addr
	return daemonView{name: "B", addr: addr, c: peer.dial(t, in.svc), httpURL: httpURL}, stop
}

func (d daemonView) jwksKids(t *testing.T, in *instance) map[string]bool {
	t.Helper()
	resp, err := in.httpClient().Get(d.httpURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct{ Keys []struct{ Kid string } }
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range set.Keys {
		out[k.Kid] = true
	}
	return out
}

func (d daemonView) signKid(t *testing.T, key string) string {
	t.Helper()
	resp, err := d.c.Sign(ctxT(t), &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Message{Message: []byte("m")}})
	if err != nil {
		t.Fatalf("daemon %s: Sign(%q) = %v", d.name, key, err)
	}
	return resp.GetKid()
}

// eventually retries check until it passes or the deadline (several refresh intervals) passes.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(4 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sameSet(got map[string]bool, want ...string) error {
	if len(got) != len(want) {
		return fmt.Errorf("JWKS kids %v, want %v", got, want)
	}
	for _, k := range want {
		if !got[k] {
			return fmt.Errorf("JWKS kids %v, want %v", got, want)
		}
	}
	return nil
}

// TestStagedRotationTwoDaemons rotates a key on a real token with two daemons serving it, and checks
// at each phase that both agree on the JWKS, the signing kid and what verifies; it restarts the daemons
// mid-way, and checks that the retired version's objects are gone from the token at the end.
func TestStagedRotationTwoDaemons(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rot": "ES256"},
		keyFlags: []string{"--prepublish", "3s", "--grace", "5s"}, edit: shortPeriods})
	a := daemonView{name: "A", c: in.dial(t, in.svc), httpURL: in.httpURL}
	b, stopB := in.second(t)
	daemons := []daemonView{a, b}

	v1 := a.signKid(t, "rot")
	oldSig, err := a.c.Sign(ctxT(t), &signerv1.SignRequest{Key: "rot", Input: &signerv1.SignRequest_Message{Message: []byte("before")}})
	if err != nil {
		t.Fatal(err)
	}
	verifiesOld := func(d daemonView) bool {
		v, err := d.c.Verify(ctxT(t), &signerv1.VerifyRequest{Key: "rot", Input: &signerv1.VerifyRequest_Message{Message: []byte("before")}, Signature: oldSig.GetSignature()})
		return err == nil && v.GetValid()
	}

	// Staged rotation through the local CLI on the token, while both daemons run. The CLI reads its
	// clock after this, so v2 activates no earlier than 3s (its prepublish) from now.
	rotated := time.Now()
	out, err := signerd(t, nil, "keys", "rotate", "--config", in.cfgPath, "--name", "rot")
	if err != nil {
		t.Fatalf("signerd keys rotate: %v\n%s", err, out)
	}
	list, _ := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
	var v2 string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == "rot" && f[2] == "2" && f[3] == "pending" {
			v2 = f[4]
		}
	}
	if v2 == "" {
		t.Fatalf("keys list shows no pending version 2 of rot:\n%s", list)
	}

	// Pending: within a refresh both publish v2, both still sign with v1.
	for _, d := range daemons {
		eventually(t, "daemon "+d.name+" publishes the pending version", func() error { return sameSet(d.jwksKids(t, in), v1, v2, d.esKid(t)) })
		// Only a signature made wholly before v2 could activate must be v1's.
		if kid := d.signKid(t, "rot"); time.Since(rotated) < 3*time.Second && kid != v1 {
			t.Errorf("daemon %s signs with %s during prepublish, want v1 %s", d.name, kid, v1)
		}
	}
	// Restart B while v2 is pending: it comes back with the same view.
	stopB()
	b, stopB = in.second(t)
	daemons[1] = b
	defer stopB()

	// Active: both sign with v2; v1 is retired but still verifies and is still published. A is restarted
	// in this phase, B was restarted in the last one.
	eventually(t, "daemon A signs with v2", func() error {
		if kid := a.signKid(t, "rot"); kid != v2 {
			return fmt.Errorf("signs with %s, want v2 %s", kid, v2)
		}
		return nil
	})
	stopA := in.restartFirst(t)
	defer stopA()
	a = daemonView{name: "A", c: in.dial(t, in.svc), httpURL: in.httpURL}
	daemons[0] = a
	for _, d := range daemons {
		eventually(t, "daemon "+d.name+" signs with v2", func() error {
			if kid := d.signKid(t, "rot"); kid != v2 {
				return fmt.Errorf("signs with %s, want v2 %s", kid, v2)
			}
			return nil
		})
		if err := sameSet(d.jwksKids(t, in), v1, v2, d.esKid(t)); err != nil && time.Since(rotated) < 7*time.Second {
			t.Errorf("daemon %s while v1 is in grace: %v", d.name, err)
		}
		if !verifiesOld(d) && time.Since(rotated) < 7*time.Second {
			t.Errorf("daemon %s refuses v1's signature during its grace", d.name)
		}
	}

	// Grace over (3s + 5s after the rotation): v1 unpublished and refused everywhere, then destroyed.
	time.Sleep(time.Until(rotated.Add(8 * time.Second)))
	for _, d := range daemons {
		eventually(t, "daemon "+d.name+" drops v1 after its grace", func() error {
			if verifiesOld(d) {
				return fmt.Errorf("v1 signature still verifies")
			}
			return sameSet(d.jwksKids(t, in), v2, d.esKid(t))
		})
	}
	eventually(t, "v1 destroyed in the token", func() error {
		out, _ := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 5 && f[0] == "rot" && f[2] == "1" {
				if f[3] != "destroyed" || f[4] != v1 {
					return fmt.Errorf("v1 is %s (kid %s), want destroyed with its kid kept", f[3], f[4])
				}
				return nil
			}
		}
		return fmt.Errorf("no v1 line in\n%s", out)
	})
	if objs := p11Objects(t, in); strings.Contains(objs, "signerd:rot:v1") || !strings.Contains(objs, "signerd:rot:v2") {
		t.Errorf("pkcs11-tool still shows rot v1 objects (or lost v2):\n%s", objs)
	}
}

// restartFirst stops the instance's first daemon and starts it again on the same config.
func (in *instance) restartFirst(t *testing.T) func() {
	t.Helper()
	in.stop()
	var stop func()
	in.addr, in.httpURL, in.stderr, stop, in.proc = serve(t, in.cfgPath)
	in.stop = stop
	return stop
}

// esKid is the kid of the instance's es256 key, which every JWKS also carries.
func (d daemonView) esKid(t *testing.T) string { return d.signKid(t, "es256") }

// p11Objects lists the token's objects with pkcs11-tool (OpenSC), independently of signerd.
func p11Objects(t *testing.T, in *instance) string {
	t.Helper()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		if os.Getenv(softhsmtest.RequireEnv) == "1" {
			t.Fatal("pkcs11-tool (opensc) is required: apt-get install opensc")
		}
		t.Skip("pkcs11-tool (opensc) not installed")
	}
	cmd := exec.Command("pkcs11-tool", "--module", in.tok.Module, "--token-label", in.tok.Label, "--login", "--pin", in.tok.PIN, "--list-objects")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+in.tok.Conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	return string(out)
}

// TestEmergencyRotationTwoDaemons revokes the active version through KeyAdmin on one daemon; within a
// refresh the other refuses its tokens and signatures too, and neither publishes it.
func TestEmergencyRotationTwoDaemons(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rot": "ES256"},
		keyFlags: []string{"--prepublish", "3s", "--grace", "5s"}, edit: shortPeriods})
	a := daemonView{name: "A", c: in.dial(t, in.svc), httpURL: in.httpURL}
	b, _ := in.second(t)
	tok, _ := mintJWT(t, in, in.addr, "rot", 4*time.Second)
	for _, d := range []daemonView{a, b} {
		if _, err := d.c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: tok}); err != nil {
			t.Fatalf("daemon %s: VerifyJWT before rotation = %v", d.name, err)
		}
	}
	admin := signerv1.NewKeyAdminClient(in.conn(t, in.svc))
	rot, err := admin.RotateKey(ctxT(t), &signerv1.RotateKeyRequest{Key: "rot", Emergency: true})
	if err != nil {
		t.Fatalf("RotateKey(emergency) = %v", err)
	}
	v2 := rot.GetVersion().GetKid()
	for _, d := range []daemonView{a, b} {
		eventually(t, "daemon "+d.name+" refuses the revoked version", func() error {
			if _, err := d.c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: tok}); status.Code(err) != codes.Unauthenticated {
				return fmt.Errorf("VerifyJWT(old token) = %v, want Unauthenticated", err)
			}
			if kid := d.signKid(t, "rot"); kid != v2 {
				return fmt.Errorf("signs with %s, want %s", kid, v2)
			}
			return sameSet(d.jwksKids(t, in), v2, d.esKid(t))
		})
	}
	// Non-admins cannot rotate.
	limitedAdmin := signerv1.NewKeyAdminClient(in.conn(t, in.limited))
	if _, err := limitedAdmin.RotateKey(ctxT(t), &signerv1.RotateKeyRequest{Key: "rot"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("RotateKey by a non-admin = %v, want PermissionDenied", err)
	}
	if events := auditEvents(t, in, func(e map[string]any) bool {
		return e["op"] == "admin.rotate_key" && e["outcome"] == "ok" && strings.Contains(fmt.Sprint(e["reason"]), "emergency")
	}); len(events) != 1 {
		t.Errorf("audit trail has %d emergency rotation events, want 1", len(events))
	}
}

// TestRotateDueConcurrently runs `signerd keys rotate --due` from three processes at once: every due key
// is rotated exactly once, and a key that is not due is left alone.
func TestRotateDueConcurrently(t *testing.T) {
	keys := map[string]string{"es256": "ES256", "d1": "ES256", "d2": "EdDSA", "d3": "ES384", "d4": "ES256"}
	in := startInstance(t, instanceOptions{keys: keys, edit: shortPeriods,
		keyFlags: []string{"--prepublish", "2s", "--grace", "5s", "--rotation-period", "3s"}})
	// es256 was created with the same period; give every key time to come due.
	time.Sleep(3100 * time.Millisecond)
	var wg sync.WaitGroup
	outs := make([]string, 3)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := signerd(t, nil, "keys", "rotate", "--due", "--config", in.cfgPath)
			if err != nil {
				t.Errorf("rotate --due #%d: %v\n%s", i, err, out)
			}
			outs[i] = out
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, out := range outs {
		for _, line := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(line, "rotated "); ok {
				name, _, _ := strings.Cut(rest, " ")
				counts[name]++
			}
		}
	}
	list, err := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]int{}
	for _, line := range strings.Split(list, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			versions[f[0]]++
		}
	}
	for name := range keys {
		if counts[name] != 1 || versions[name] != 2 {
			t.Errorf("key %s: rotated %d times by the processes, has %d versions; want 1 and 2\n%s\n%s", name, counts[name], versions[name], strings.Join(outs, "---\n"), list)
		}
	}
	// Right after, nothing is due (each key has a pending version).
	if out, err := signerd(t, nil, "keys", "rotate", "--due", "--config", in.cfgPath); err != nil || !strings.Contains(out, "no key due") {
		t.Errorf("second rotate --due = %v\n%s", err, out)
	}
}

// TestUnknownKidRefresh: a daemon that refreshes rarely still verifies a token signed by a version that
// another daemon just created, because an unknown kid makes it re-read the token (SIGHUP does too).
func TestUnknownKidRefresh(t *testing.T) {
	slow := func(cfg string) string {
		return strings.Replace(shortPeriods(cfg), "refresh_interval: 1s\n", "refresh_interval: 1h\n", 1)
	}
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rot": "ES256"},
		keyFlags: []string{"--prepublish", "3s", "--grace", "5s"}, edit: slow})
	b, _ := in.second(t)
	admin := signerv1.NewKeyAdminClient(in.conn(t, in.svc))
	rot, err := admin.RotateKey(ctxT(t), &signerv1.RotateKeyRequest{Key: "rot", Emergency: true})
	if err != nil {
		t.Fatal(err)
	}
	tok, kid := mintJWT(t, in, in.addr, "rot", time.Minute)
	if kid != rot.GetVersion().GetKid() {
		t.Fatalf("token signed on A after rotation has kid %s, want %s", kid, rot.GetVersion().GetKid())
	}
	v, err := b.c.VerifyJWT(ctxT(t), &signerv1.VerifyJWTRequest{Token: tok})
	if err != nil || v.GetKid() != kid {
		t.Errorf("VerifyJWT on B (refresh interval 1h) of a token from the new version = %v, %v; want it verified after an unknown-kid refresh", v, err)
	}
}

// TestSIGHUPReload changes the policy in the config file and sends SIGHUP: the daemon applies the new
// grant without a restart, and a broken config on a later SIGHUP leaves the working one in place.
func TestSIGHUPReload(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}})
	limited := in.dial(t, in.limited)
	verify := func() error {
		_, err := limited.Verify(ctxT(t), &signerv1.VerifyRequest{Key: "es256", Input: &signerv1.VerifyRequest_Message{Message: []byte("m")}, Signature: []byte{1}})
		return err
	}
	if status.Code(verify()) != codes.PermissionDenied {
		t.Fatal("limited may verify before the reload")
	}
	b, err := os.ReadFile(in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Replace(string(b), "keys: [es256]\n      operations: [sign]\n", "keys: [es256]\n      operations: [sign, verify]\n", 1)
	writeConfig(t, in.cfgPath, good)
	if err := in.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reloaded grant applies", func() error {
		if err := verify(); status.Code(err) != codes.InvalidArgument { // allowed now; the signature is malformed
			return fmt.Errorf("Verify after SIGHUP = %v, want InvalidArgument (allowed, malformed)", err)
		}
		return nil
	})
	// A renewed server certificate, then SIGHUP: both listeners present it.
	renewed := issue(t, in.ca, devca.Request{CommonName: "server-renewed", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err := renewed.WriteFiles(filepath.Join(in.dir, "server.pem"), filepath.Join(in.dir, "server-key.pem")); err != nil {
		t.Fatal(err)
	}
	if err := in.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	served := func(addr string) string {
		conn, err := tls.Dial("tcp", addr, in.clientTLS(in.svc))
		if err != nil {
			return err.Error()
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	eventually(t, "both listeners serve the renewed certificate", func() error {
		for _, addr := range []string{in.addr, strings.TrimPrefix(in.httpURL, "https://")} {
			if cn := served(addr); cn != "server-renewed" {
				return fmt.Errorf("%s serves %q", addr, cn)
			}
		}
		return nil
	})
	writeConfig(t, in.cfgPath, good+"unknown_field: 1\n")
	if err := in.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the daemon logs the failed reload", func() error {
		if !strings.Contains(in.stderr.String(), "reload failed") {
			return fmt.Errorf("daemon log lacks the failed reload:\n%s", in.stderr)
		}
		return nil
	})
	if err := verify(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Verify after a SIGHUP with a broken config = %v, want the previous policy kept", err)
	}

	// A reload is all or nothing: a new gRPC certificate next to an HTTPS key pair that does not load
	// leaves both listeners with the certificate they had.
	again := issue(t, in.ca, devca.Request{CommonName: "server-again", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err := again.WriteFiles(filepath.Join(in.dir, "server.pem"), filepath.Join(in.dir, "server-key.pem")); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, in.cfgPath, strings.Replace(good, "http:\n", "http:\n  cert_file: "+filepath.Join(in.dir, "ca.pem")+
		"\n  key_file: "+filepath.Join(in.dir, "server-key.pem")+"\n", 1)) // the CA's certificate, the server's key
	if err := in.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the half-broken reload is refused", func() error {
		if n := strings.Count(in.stderr.String(), "reload failed"); n != 2 {
			return fmt.Errorf("%d failed reloads logged, want 2", n)
		}
		return nil
	})
	for _, addr := range []string{in.addr, strings.TrimPrefix(in.httpURL, "https://")} {
		if cn := served(addr); cn != "server-renewed" {
			t.Errorf("%s serves %q after a refused reload, want the previous server-renewed", addr, cn)
		}
	}
}

// TestSIGHUPDuringStartup: a reload asked for while the daemon is still opening the token and loading
// its keys neither kills it nor is lost: the daemon carries it out once it serves.
func TestSIGHUPDuringStartup(t *testing.T) {
	lockFile, useLockFile := tokenLockFile(t)
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}, edit: useLockFile})
	in.stop()
	// Holding the token's local lock keeps the next daemon starting (it cannot open the token) for as
	// long as the test likes.
	release := holdLock(t, lockFile)
	_, _, log, _, _ := serve(t, in.cfgPath, func(p *os.Process) {
		// Once the daemon opens the lock file it has read its config, and catches SIGHUP since before.
		waitOpens(t, p.Pid, lockFile)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Error(err)
		}
		release()
	})
	eventually(t, "the reload asked for during start-up is carried out", func() error {
		if !strings.Contains(log.String(), "msg=reloaded") {
			return fmt.Errorf("no reload logged:\n%s", log)
		}
		return nil
	})
}

// TestConcurrentAdminOnTwoDaemons has two daemons change keys on one token at the same time (emergency
// rotations through each one's KeyAdmin, two of them on the same key): every change lands exactly once,
// and both daemons and a fresh process end with the same view.
func TestConcurrentAdminOnTwoDaemons(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "k1": "ES256", "k2": "ES256"},
		keyFlags: []string{"--prepublish", "3s", "--grace", "5s"}, edit: shortPeriods})
	b, _ := in.second(t)
	peer := *in
	peer.addr = b.addr
	admins := []signerv1.KeyAdminClient{signerv1.NewKeyAdminClient(in.conn(t, in.svc)), signerv1.NewKeyAdminClient(peer.conn(t, in.svc))}

	const rounds = 4
	var wg sync.WaitGroup
	for i, admin := range admins {
		for _, key := range []string{"k1", fmt.Sprintf("k%d", i+1)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					if _, err := admin.RotateKey(ctxT(t), &signerv1.RotateKeyRequest{Key: key, Emergency: true}); err != nil {
						t.Errorf("daemon %d: RotateKey(%s) = %v", i, key, err)
					}
				}
			}()
		}
	}
	wg.Wait()
	want := map[string]int{"k1": 1 + 3*rounds, "k2": 1 + rounds}
	for i, admin := range admins {
		eventually(t, fmt.Sprintf("daemon %d sees every rotation", i), func() error {
			list, err := admin.ListKeys(ctxT(t), &signerv1.ListKeysRequest{})
			if err != nil {
				return err
			}
			got := map[string]int{}
			for _, k := range list.GetKeys() {
				got[k.GetName()] = len(k.GetVersions())
			}
			for k, n := range want {
				if got[k] != n {
					return fmt.Errorf("versions %v, want %v", got, want)
				}
			}
			return nil
		})
	}
	out, err := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range want {
		if got := strings.Count(out, "\n"+k+" "); got != n {
			t.Errorf("signerd keys list shows %d versions of %s, want %d\n%s", got, k, n, out)
		}
	}
}

// waitOpens waits (up to 30s) until process pid has file path open, as /proc/PID/fd shows.
func waitOpens(t *testing.T, pid int, path string) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		fds, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("list open files of process %d: %v", pid, err)
		}
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == path {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d has not opened %s after 30s", pid, path)
}

// TestAutoRotate: with auto_rotate, two daemons on one token rotate each key whose rotation period has
// passed, at their refreshes, with no command or timer, and each rotation happens once and on time:
// every version beyond the first is created no earlier than its predecessor's activation plus the
// period, and is in exactly one of the two audit trails as a rotate_due event with its kid. A key
// without a rotation period is left alone.
func TestAutoRotate(t *testing.T) {
	const period = 3 * time.Second
	keys := map[string]string{"es256": "ES256", "ed": "EdDSA"}
	in := startInstance(t, instanceOptions{keys: keys, edit: func(cfg string) string { return shortPeriods(cfg) + "auto_rotate: true\n" },
		keyFlags: []string{"--prepublish", "2s", "--grace", "5s", "--rotation-period", period.String()}})
	if out, err := signerd(t, nil, "keys", "create", "--config", in.cfgPath, "--name", "manual", "--alg", "ES256"); err != nil {
		t.Fatalf("create manual: %v\n%s", err, out)
	}
	_, stopB := in.second(t)

	type version struct {
		kid                string
		created, activates time.Time
	}
	versions := func() map[string][]version {
		list, err := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
		if err != nil {
			t.Fatalf("keys list: %v\n%s", err, list)
		}
		out := map[string][]version{}
		for _, line := range strings.Split(list, "\n")[1:] {
			f := strings.Fields(line) // KEY ALG VERSION STATE KID CREATED ACTIVATES EXPIRES
			if len(f) < 8 {
				continue
			}
			created, err1 := time.Parse(time.RFC3339, f[5])
			activates, err2 := time.Parse(time.RFC3339, f[6])
			if err1 != nil || err2 != nil {
				t.Fatalf("keys list line %q: %v %v", line, err1, err2)
			}
			out[f[0]] = append(out[f[0]], version{kid: f[4], created: created, activates: activates})
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := versions()
		if len(v["es256"]) >= 2 && len(v["ed"]) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no automatic rotation within 30s: versions %v\n%s", v, in.stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Stopped, the daemons rotate no more and their trails are complete.
	stopB()
	in.stop()
	got := versions()
	events := map[string][]string{} // key -> kids of its rotate_due events
	for _, trail := range []string{"audit.log", "audit-second.log"} {
		b, err := os.ReadFile(filepath.Join(in.dir, trail))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line == "" {
				continue
			}
			var ev struct{ Op, Key, Kid, Outcome string }
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("%s: %v", trail, err)
			}
			if ev.Op == "rotate_due" && ev.Outcome == "ok" {
				events[ev.Key] = append(events[ev.Key], ev.Kid)
			}
		}
	}
	for name := range keys {
		vs := got[name]
		var want []string
		for i := 1; i < len(vs); i++ {
			want = append(want, vs[i].kid)
			// Times in the list are whole seconds.
			if earliest := vs[i-1].activates.Add(period - time.Second); vs[i].created.Before(earliest) {
				t.Errorf("key %s: version %d created %v, before version %d's activation + period (%v)", name, i+1, vs[i].created, i, earliest)
			}
		}
		slices.Sort(want)
		slices.Sort(events[name])
		if !slices.Equal(events[name], want) {
			t.Errorf("key %s: rotate_due events for kids %v in the two trails; want one for each new version %v", name, events[name], want)
		}
	}
	if len(got["manual"]) != 1 || len(events["manual"]) != 0 {
		t.Errorf("key without a rotation period: %d versions, %d rotations", len(got["manual"]), len(events["manual"]))
	}
	// The daemon that lost a key's lock to the other found it no longer due: no error.
	if strings.Contains(in.stderr.String(), "scheduled rotation failed") {
		t.Errorf("daemon log:\n%s", in.stderr)
	}
}

// TestRefreshWhileLockHeldElsewhere: while another local process holds the token's lock (an
// administrator's long key change), a key refresh gives up after its bounded wait instead of hanging
// in the token: the daemon stays SERVING and keeps signing, and SIGTERM stops it promptly.
func TestRefreshWhileLockHeldElsewhere(t *testing.T) {
	lockFile, useLockFile := tokenLockFile(t)
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}, extraConfig: "refresh_interval: 1s\n",
		edit: useLockFile})
	release := holdLock(t, lockFile)
	defer release()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(in.stderr.String(), "token busy") {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh gave up on the held lock within 30s\n%s", in.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(16 * time.Second) // past the 15 s after which a task stuck in the token turns health down
	conn := in.conn(t, in.svc)
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "signer.v1.Signer"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health while another process holds the lock = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	digest := make([]byte, 32)
	if _, err := signerv1.NewSignerClient(conn).Sign(context.Background(), &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Digest{Digest: digest}}); err != nil {
		t.Errorf("Sign while another process holds the lock = %v", err)
	}
	if err := in.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for stopBy := time.Now().Add(20 * time.Second); time.Now().Before(stopBy); time.Sleep(100 * time.Millisecond) {
		if err := in.proc.Signal(syscall.Signal(0)); err != nil {
			return // exited
		}
	}
	t.Fatalf("signerd did not exit within 20 s of SIGTERM while another process held the token's lock\n%s", in.stderr)
}

// tokenLockFile returns a lock file for an instance's token, and the config edit that names it.
func tokenLockFile(t *testing.T) (string, func(string) string) {
	path := filepath.Join(t.TempDir(), "token.lock")
	return path, func(cfg string) string { return strings.Replace(cfg, "hsm:\n", "hsm:\n  lock_file: "+path+"\n", 1) }
}

// holdLock takes the lock file at path as another local process would, until release (or cleanup).
func holdLock(t *testing.T, path string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
}
