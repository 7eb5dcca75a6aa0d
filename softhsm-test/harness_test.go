package softhsmtest_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/devca"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

// signerdBin and signerctlBin are the binaries, built once for the whole package by TestMain.
var signerdBin, signerctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signerd-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	signerdBin, signerctlBin = filepath.Join(dir, "signerd"), filepath.Join(dir, "signerctl")
	out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/signerd/signerd/cmd/signerd",
		"github.com/signerd/signerd/cmd/signerctl").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build signerd and signerctl: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// keyAlgs are the keys every test instance gets, one per algorithm.
var keyAlgs = map[string]string{
	"rs256": "RS256", "rs384": "RS384", "rs512": "RS512",
	"ps256": "PS256", "ps384": "PS384", "ps512": "PS512",
	"es256": "ES256", "es384": "ES384", "es512": "ES512",
	"eddsa": "EdDSA",
}

// instance is a signerd process serving a fresh SoftHSM2 token over mTLS on loopback.
type instance struct {
	tok     *softhsmtest.Token
	dir     string
	cfgPath string
	ca      *devca.CA
	addr    string
	// httpURL is the base URL of the public HTTPS listener (JWKS).
	httpURL string
	// clients by identity: "svc" may do everything with every key (but sign with issuedKey), "limited" may
	// only sign with es256, "issuer" may only issue and verify JWTs with issuedKey under the JWT rules
	// below.
	svc, limited, issuer *devca.Leaf
	stderr               *lockedBuffer
	// stop stops the instance's daemon; proc is its process.
	stop func()
	proc *os.Process
}

// issuedKey is the key that identity issuer.test issues JWTs with under jwt rules. An instance has that
// grant when its keys include this one.
const issuedKey = "issued"

type instanceOptions struct {
	keys        map[string]string
	maxSessions int
	extraConfig string
	// keyFlags are extra `signerd keys create` flags (rotation settings).
	keyFlags []string
	// edit changes the configuration before keys are created and the daemon starts.
	edit func(string) string
}

// signerd runs the signerd binary and returns its combined output.
func signerd(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(signerdBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startInstance creates a token with keys, certificates and a config, and starts `signerd serve`.
func startInstance(t testing.TB, opts instanceOptions) *instance {
	t.Helper()
	if opts.keys == nil {
		opts.keys = keyAlgs
	}
	if opts.maxSessions == 0 {
		opts.maxSessions = 8
	}
	tok := softhsmtest.NewToken(t, "e2e")
	in := &instance{tok: tok, dir: tok.Dir}
	var err error
	if in.ca, err = devca.New("e2e CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	srv := issue(t, in.ca, devca.Request{CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err := srv.WriteFiles(filepath.Join(in.dir, "server.pem"), filepath.Join(in.dir, "server-key.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.dir, "ca.pem"), in.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	in.svc = issue(t, in.ca, devca.Request{CommonName: "svc", URIs: []string{"spiffe://test/svc"}, Client: true})
	in.limited = issue(t, in.ca, devca.Request{CommonName: "limited", DNSNames: []string{"limited.test"}, Client: true})
	in.issuer = issue(t, in.ca, devca.Request{CommonName: "issuer", DNSNames: []string{"issuer.test"}, Client: true})
	pinFile := filepath.Join(in.dir, "pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in.cfgPath = filepath.Join(in.dir, "signerd.yaml")
	svcKeys, issuerGrants := `["*"]`, ""
	if _, ok := opts.keys[issuedKey]; ok {
		// A key with jwt rules may not sign raw data: svc gets the other keys by name, and only issues
		// (without rules) and verifies with this one.
		var names []string
		for name := range opts.keys {
			if name != issuedKey {
				names = append(names, strconv.Quote(name))
			}
		}
		slices.Sort(names)
		svcKeys = "[" + strings.Join(names, ", ") + "]"
		issuerGrants = `    - identity: spiffe://test/svc
      keys: [` + issuedKey + `]
      operations: [verify, public_key, sign_jwt, verify_jwt]
    - identity: issuer.test
      keys: [` + issuedKey + `]
      operations: [sign_jwt, verify_jwt]
      jwt:
        issuer: https://issuer.test
        audiences: [api-a, api-b]
        subject: "user-[0-9]+"
        max_ttl: 10m
        default_ttl: 2m
        forbidden_claims: [admin]
        generate_jti: true
`
	}
	writeConfig(t, in.cfgPath, fmt.Sprintf(`listen: 127.0.0.1:0
tls:
  cert_file: %[1]s/server.pem
  key_file: %[1]s/server-key.pem
  client_ca_file: %[1]s/ca.pem
hsm:
  module: %[2]s
  token_label: %[3]s
  pin_file: %[4]s
  max_sessions: %[5]d
  pool_wait_timeout: 2s
policy:
  grants:
    - identity: spiffe://test/svc
      keys: %[7]s
      operations: [sign, verify, public_key, sign_jwt, verify_jwt]
    - identity: limited.test
      keys: [es256]
      operations: [sign]
%[8]shttp:
  listen: 127.0.0.1:0
  jwks_max_age: 90s
audit:
  file: %[1]s/audit.log
%[6]s`, in.dir, tok.Module, tok.Label, pinFile, opts.maxSessions, opts.extraConfig, svcKeys, issuerGrants))
	if opts.edit != nil {
		b, _ := os.ReadFile(in.cfgPath)
		writeConfig(t, in.cfgPath, opts.edit(string(b)))
	}
	for name, alg := range opts.keys {
		args := append([]string{"keys", "create", "--config", in.cfgPath, "--name", name, "--alg", alg}, opts.keyFlags...)
		if strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS") {
			args = append(args, "--bits", "2048")
		}
		if out, err := signerd(t, nil, args...); err != nil {
			t.Fatalf("signerd %v: %v\n%s", args, err, out)
		}
	}
	in.addr, in.httpURL, in.stderr, in.stop, in.proc = serve(t, in.cfgPath)
	return in
}

func writeConfig(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func issue(t testing.TB, ca *devca.CA, req devca.Request) *devca.Leaf {
	t.Helper()
	l, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var servingRE = regexp.MustCompile(`msg="signerd serving" addr=(\S+) http=(\S*)`)

// serve starts `signerd serve --config cfgPath` and waits until it listens; each of started is called
// with the process as soon as it runs. stop interrupts the process and waits for it; cleanup calls it
// too.
func serve(t testing.TB, cfgPath string, started ...func(*os.Process)) (addr, httpURL string, log *lockedBuffer, stop func(), proc *os.Process) {
	t.Helper()
	cmd := exec.Command(signerdBin, "serve", "--config", cfgPath)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range started {
		f(cmd.Process)
	}
	buf := &lockedBuffer{}
	addrc := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			buf.add(sc.Text())
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrc <- m:
				default:
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); _ = pw.Close() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(stop)
	select {
	case m := <-addrc:
		if m[2] != "" {
			httpURL = "https://" + m[2]
		}
		return m[1], httpURL, buf, stop, cmd.Process
	case err := <-exited:
		once.Do(func() {})
		t.Fatalf("signerd serve exited: %v\n%s", err, buf)
	case <-time.After(60 * time.Second):
		t.Fatalf("signerd serve did not start in 60s\n%s", buf)
	}
	return "", "", nil, nil, nil
}

// lockedBuffer collects a process's log lines.
type lockedBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *lockedBuffer) add(s string) {
	b.mu.Lock()
	b.lines = append(b.lines, s)
	b.mu.Unlock()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// dial connects to the instance with the given client certificate (nil for none) and CA.
func (in *instance) dial(t testing.TB, cert *devca.Leaf) signerv1.SignerClient {
	t.Helper()
	return signerv1.NewSignerClient(in.conn(t, cert))
}

// client dials the instance with the client package, as the holder of cert; it is closed at cleanup.
func (in *instance) client(t testing.TB, cert *devca.Leaf) *client.Client {
	t.Helper()
	c, err := client.Dial(in.addr, client.Options{TLSConfig: in.clientTLS(cert)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// signStream opens a SignStream on the instance, as the holder of cert; it is closed at cleanup.
func (in *instance) signStream(t testing.TB, cert *devca.Leaf) (*client.Client, *client.Stream) {
	t.Helper()
	c := in.client(t, cert)
	st, err := c.SignStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return c, st
}

// clientTLS is the TLS 1.3 configuration of a client with certificate cert (none when nil).
func (in *instance) clientTLS(cert *devca.Leaf) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: in.ca.Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{cert.TLS()}
	}
	return cfg
}

func (in *instance) conn(t testing.TB, cert *devca.Leaf) *grpc.ClientConn {
	t.Helper()
	cfg := in.clientTLS(cert)
	conn, err := grpc.NewClient(in.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sourceEnv reads the SIGNERD_ variables that a shell sourcing the file at path gets.
func sourceEnv(t testing.TB, path string) map[string]string {
	t.Helper()
	cmd := exec.Command("sh", "-c", `. "$1" && env -0`, "sh", path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sourcing %s: %v", path, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "SIGNERD_") {
			env[k] = v
		}
	}
	return env
}

// waitEnv waits for `signerd dev` to write DIR/env and returns its variables.
func waitEnv(t testing.TB, path string, round int, cmd *exec.Cmd, out fmt.Stringer) map[string]string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			info, _ := os.Stat(path)
			if round == 0 || time.Since(info.ModTime()) < 30*time.Second {
				return sourceEnv(t, path)
			}
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("signerd dev did not write %s\n%s", path, out)
	return nil
}

// dialEnv connects with nothing but the files DIR/env names.
func dialEnv(t testing.TB, env map[string]string) signerv1.SignerClient {
	t.Helper()
	for _, k := range []string{"SIGNERD_ADDR", "SIGNERD_CACERT", "SIGNERD_CERT", "SIGNERD_KEY"} {
		if env[k] == "" {
			t.Fatalf("DIR/env lacks %s: %v", k, env)
		}
	}
	cert, err := tls.LoadX509KeyPair(env["SIGNERD_CERT"], env["SIGNERD_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(env["SIGNERD_CACERT"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	host, _, _ := net.SplitHostPort(env["SIGNERD_ADDR"])
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: host}
	conn, err := grpc.NewClient(env["SIGNERD_ADDR"], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return signerv1.NewSignerClient(conn)
}
