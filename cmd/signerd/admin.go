package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/hsmstore"
	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/server/authz"
)

// openRing opens the token named in the config file and loads its keys, for the local subcommands. A
// command that changes keys (exclusive) first takes the token's local lock and holds it until it is
// done, so that its view of the token is complete and no other process on this machine changes the
// token meanwhile; the token-wide key locks still order it with other machines.
func openRing(ctx context.Context, s *streams, cfgPath string, exclusive bool) (*keyring.Ring, *config.Config, func(), error) {
	if cfgPath == "" {
		return nil, nil, nil, cli.Usagef("--config is required")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	hcfg, err := cfg.HSMConfig()
	if errors.Is(err, config.ErrSealed) {
		// No PIN is kept for a sealed daemon: the administrator running this command gives it.
		hcfg.PIN, err = readPIN(ctx, s.stdin, s.stderr, "PIN for token "+hcfg.Selector()+": ")
	}
	if err != nil {
		return nil, nil, nil, err
	}
	release := func() {}
	if exclusive {
		ex, err := hsm.AcquireExclusive(hcfg)
		if err != nil {
			return nil, nil, nil, err
		}
		hcfg.Exclusive, release = ex, ex.Release
	}
	tok, err := hsm.Open(hcfg)
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	// One broken key must not stop an administrator from changing the others (or a timer's
	// rotate --due from rotating them): its problems are reported, and it is left as a refresh leaves it.
	ring, err := keyring.Open(hsmstore.New(tok), keyring.Options{MinPrepublish: minPrepublish(cfg), LoadProblems: func(err error) {
		fmt.Fprintf(s.stderr, "signerd: warning: %v\n", err)
	}})
	if err != nil {
		_ = tok.Close()
		release()
		return nil, nil, nil, err
	}
	return ring, cfg, func() { _ = tok.Close(); release() }, nil
}

// withRing runs fn with the key ring of the token named in the config file, opened as openRing does.
// The keys commands call it only once their flags have been checked.
func withRing(ctx context.Context, s *streams, cfgPath string, exclusive bool, fn func(*keyring.Ring, *config.Config) error) error {
	ring, cfg, closeFn, err := openRing(ctx, s, cfgPath, exclusive)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(ring, cfg)
}

// checkSettings applies the same rule as the daemon's KeyAdmin: prepublish at least the JWKS max-age,
// grace at least the longest token TTL the policy grants for the key.
func checkSettings(cfg *config.Config, name string, st keyring.Settings) error {
	policy, err := authz.Compile(cfg.Policy, nil)
	if err != nil {
		return err
	}
	return st.CheckAgainst(minPrepublish(cfg), policy.MaxTTL(name))
}

// nameFlag defines --name, the key's name, on fs.
func nameFlag(fs *flag.FlagSet) *string {
	return fs.String("name", "", "the key's `name` (required)")
}

// algList names the algorithms a key may have, for usage text.
func algList() string {
	names := make([]string, 0, len(jose.Algorithms()))
	for _, a := range jose.Algorithms() {
		names = append(names, string(a))
	}
	return strings.Join(names, " ")
}

func keysCreateFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	cfgPath := configFlag(fs)
	name := fs.String("name", "", "`name` of the new key: [a-z0-9][a-z0-9-]{0,62} (required)")
	alg := fs.String("alg", "", "the key's JOSE `algorithm`: "+algList()+" (required)")
	bits := fs.Int("bits", 0, "RSA modulus `size` (default 3072); RSA algorithms only")
	def := keyring.DefaultSettings()
	prepublish := fs.Duration("prepublish", def.Prepublish.D(), "how long a new version is published before it signs")
	grace := fs.Duration("grace", def.Grace.D(), "how long a retired version still verifies")
	period := fs.Duration("rotation-period", 0, "rotate when the active version is this old (keys rotate --due); 0 = never")
	keep := fs.Bool("keep-retired", false, "keep versions past their grace instead of destroying them")
	return func(ctx context.Context, s *streams, _ []string) error {
		switch {
		case *name == "":
			return cli.Usagef("--name is required")
		case !keyring.ValidName(*name):
			return cli.Usagef("--name %q: want [a-z0-9][a-z0-9-]{0,62}", *name)
		case *alg == "":
			return cli.Usagef("--alg is required")
		}
		a, err := jose.ParseAlgorithm(*alg)
		if err != nil {
			return cli.Usagef("--alg %q: want one of %s", *alg, algList())
		}
		if *bits != 0 && a.KeyType() != jose.KeyRSA {
			return cli.Usagef("--bits is for RSA keys, not %s", a)
		}
		st := keyring.Settings{Prepublish: keyring.Duration(*prepublish), Grace: keyring.Duration(*grace),
			RotationPeriod: keyring.Duration(*period), KeepRetired: *keep}
		return withRing(ctx, s, *cfgPath, true, func(ring *keyring.Ring, cfg *config.Config) error {
			if err := checkSettings(cfg, *name, st); err != nil {
				return err
			}
			k, err := ring.Create(*name, a, *bits, st)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.stdout, "created key %s (%s), version 1, kid %s\n", k.Name, k.Alg, k.Versions[0].Kid)
			return nil
		})
	}
}

func keysListFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	cfgPath := configFlag(fs)
	return func(ctx context.Context, s *streams, _ []string) error {
		return withRing(ctx, s, *cfgPath, false, func(ring *keyring.Ring, _ *config.Config) error {
			return listKeys(ring, s.stdout)
		})
	}
}

func keysPublicFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	cfgPath := configFlag(fs)
	name := nameFlag(fs)
	return func(ctx context.Context, s *streams, _ []string) error {
		if *name == "" {
			return cli.Usagef("--name is required")
		}
		return withRing(ctx, s, *cfgPath, false, func(ring *keyring.Ring, _ *config.Config) error {
			k, ok := ring.Snapshot().Key(*name)
			if !ok {
				return fmt.Errorf("%w: %q", keyring.ErrNotFound, *name)
			}
			if k.Active == nil || k.Active.Public == nil {
				return fmt.Errorf("%w: %q", keyring.ErrNoActive, *name)
			}
			der, err := x509.MarshalPKIXPublicKey(k.Active.Public)
			if err != nil {
				return err
			}
			return pem.Encode(s.stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
		})
	}
}

func keysRotateFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	cfgPath := configFlag(fs)
	name := fs.String("name", "", "`name` of the key to rotate")
	emergency := fs.Bool("emergency", false, "activate the new version now and revoke the active one")
	due := fs.Bool("due", false, "rotate every key whose rotation period has passed")
	return func(ctx context.Context, s *streams, _ []string) error {
		switch {
		case *due && (*name != "" || *emergency):
			return cli.Usagef("--due rotates every due key; it takes no --name or --emergency")
		case !*due && *name == "":
			return cli.Usagef("give --name or --due")
		}
		return withRing(ctx, s, *cfgPath, true, func(ring *keyring.Ring, _ *config.Config) error {
			if *due {
				rotated, err := ring.RotateDue(ctx)
				for _, rot := range rotated {
					fmt.Fprintf(s.stdout, "rotated %s to version %d, kid %s (staged: signs from %s)\n", rot.Key, rot.Number, rot.Kid,
						rot.ActivateAt.Format(time.RFC3339))
				}
				if err != nil {
					return err
				}
				if len(rotated) == 0 {
					fmt.Fprintln(s.stdout, "no key due")
				}
				return nil
			}
			k, v, err := ring.Rotate(*name, *emergency)
			if err != nil {
				return err
			}
			how := "staged: signs from " + v.ActivateAt.Format(time.RFC3339)
			if *emergency {
				how = "emergency: active now, previous version revoked"
			}
			fmt.Fprintf(s.stdout, "rotated %s to version %d, kid %s (%s)\n", k.Name, v.Number, v.Kid, how)
			return nil
		})
	}
}

func keysRevokeFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	return versionCommand(fs, "revoked", (*keyring.Ring).Revoke)
}

func keysDestroyFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	return versionCommand(fs, "destroyed", (*keyring.Ring).Destroy)
}

// versionCommand is keys revoke or keys destroy: op applied to one version of a key.
func versionCommand(fs *flag.FlagSet, done string, op func(*keyring.Ring, string, int) (*keyring.Key, error)) func(context.Context, *streams, []string) error {
	cfgPath := configFlag(fs)
	name := nameFlag(fs)
	version := fs.Int("version", 0, "the version's `number` (required)")
	return func(ctx context.Context, s *streams, _ []string) error {
		switch {
		case *name == "":
			return cli.Usagef("--name is required")
		case *version < 1:
			return cli.Usagef("--version is required (1 or more)")
		}
		return withRing(ctx, s, *cfgPath, true, func(ring *keyring.Ring, _ *config.Config) error {
			k, err := op(ring, *name, *version)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.stdout, "%s %s version %d (kid %s)\n", done, k.Name, *version, k.Versions[*version-1].Kid)
			return nil
		})
	}
}

func listKeys(ring *keyring.Ring, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tALG\tVERSION\tSTATE\tKID\tCREATED\tACTIVATES\tEXPIRES")
	snap := ring.Snapshot()
	for _, n := range snap.Names() {
		k, _ := snap.Key(n)
		for _, v := range k.Versions {
			expires := "-"
			if !v.ExpiresAt.IsZero() {
				expires = v.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Alg, v.Number, v.State, v.Kid,
				v.Created.Format(time.RFC3339), v.ActivateAt.Format(time.RFC3339), expires)
		}
	}
	return tw.Flush()
}

// algSpecs are the key specs listed by `token list`, one per algorithm family and size.
var algSpecs = []struct {
	algs string
	spec hsm.KeySpec
}{
	{"RS256 RS384 RS512 (2048-4096)", hsm.KeySpec{Type: hsm.RSA, Bits: 2048}},
	{"PS256 PS384 PS512", hsm.KeySpec{Type: hsm.RSA, Bits: 2048, PSS: true}},
	{"ES256", hsmstore.Spec(jose.ES256, 0)},
	{"ES384", hsmstore.Spec(jose.ES384, 0)},
	{"ES512", hsmstore.Spec(jose.ES512, 0)},
	{"EdDSA", hsmstore.Spec(jose.EdDSA, 0)},
}

// moduleFlag defines --module, the PKCS#11 module, on fs.
func moduleFlag(fs *flag.FlagSet) *string {
	return fs.String("module", hsm.DefaultModule, "PKCS#11 module `path`")
}

func tokenListFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	module := moduleFlag(fs)
	return func(_ context.Context, s *streams, _ []string) error {
		slots, err := hsm.ListSlots(*module)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLOT\tLABEL\tSERIAL\tMODEL\tSIGNERD ALGORITHMS")
		for _, sl := range slots {
			if !sl.TokenPresent {
				continue
			}
			if !sl.Initialized {
				fmt.Fprintf(tw, "%d\t(uninitialised)\t\t%s\t\n", sl.Slot, sl.Model)
				continue
			}
			var algs []string
			for _, a := range algSpecs {
				if sl.Supports(a.spec) {
					algs = append(algs, a.algs)
				}
			}
			supported := strings.Join(algs, ", ")
			if sl.ProbeErr != nil {
				supported = fmt.Sprintf("(unknown: the token did not answer: %v)", sl.ProbeErr)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", sl.Slot, sl.Label, sl.Serial, sl.Model, supported)
		}
		return tw.Flush()
	}
}

func tokenInitFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	module := moduleFlag(fs)
	label := fs.String("label", "", "the new token's `label` (required)")
	var so, user hsm.PINSource
	fs.StringVar(&so.File, "so-pin-file", "", "`file` holding the SO PIN")
	fs.StringVar(&so.Env, "so-pin-env", "", "environment `variable` holding the SO PIN")
	fs.StringVar(&user.File, "pin-file", "", "`file` holding the user PIN")
	fs.StringVar(&user.Env, "pin-env", "", "environment `variable` holding the user PIN")
	return func(_ context.Context, s *streams, _ []string) error {
		if *label == "" {
			return cli.Usagef("--label is required")
		}
		// PINSource.Read names the config's fields (pin_file, pin_env) when none or both are set:
		// here they are flags.
		for _, p := range []struct {
			src       hsm.PINSource
			file, env string
		}{{so, "--so-pin-file", "--so-pin-env"}, {user, "--pin-file", "--pin-env"}} {
			switch {
			case p.src.File == "" && p.src.Env == "":
				return cli.Usagef("give %s or %s", p.file, p.env)
			case p.src.File != "" && p.src.Env != "":
				return cli.Usagef("give %s or %s, not both", p.file, p.env)
			}
		}
		soPIN, err := so.Read()
		if err != nil {
			return fmt.Errorf("SO PIN: %w", err)
		}
		pin, err := user.Read()
		if err != nil {
			return fmt.Errorf("user PIN: %w", err)
		}
		serial, err := hsm.InitToken(*module, *label, soPIN, pin)
		if err != nil {
			return err
		}
		fmt.Fprintf(s.stdout, "initialised token %q, serial %s\n", *label, serial)
		return nil
	}
}
