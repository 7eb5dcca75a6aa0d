package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/hsmstore"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/server/authz"
)

// openRing opens the token named in the config file and loads its keys, for the local subcommands. A
// command that changes keys (exclusive) first takes the token's local lock and holds it until it is
// done, so that its view of the token is complete and no other process on this machine changes the
// token meanwhile; the token-wide key locks still order it with other machines.
func openRing(ctx context.Context, cfgPath string, exclusive bool) (*keyring.Ring, *config.Config, func(), error) {
	if cfgPath == "" {
		return nil, nil, nil, fmt.Errorf("%w: --config is required", errUsage)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	hcfg, err := cfg.HSMConfig()
	if errors.Is(err, config.ErrSealed) {
		// No PIN is kept for a sealed daemon: the administrator running this command gives it.
		hcfg.PIN, err = readPIN(ctx, os.Stdin, os.Stderr, "PIN for token "+hcfg.Selector()+": ")
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
	ring, err := keyring.Open(hsmstore.New(tok), keyring.Options{LoadProblems: func(err error) {
		fmt.Fprintf(os.Stderr, "signerd: warning: %v\n", err)
	}})
	if err != nil {
		_ = tok.Close()
		release()
		return nil, nil, nil, err
	}
	return ring, cfg, func() { _ = tok.Close(); release() }, nil
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

func cmdKeys(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: keys needs create, list, public, rotate, revoke or destroy", errUsage)
	}
	fs := newFlags("keys " + args[0])
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	name := fs.String("name", "", "key name")
	alg := fs.String("alg", "", "JOSE algorithm: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA")
	bits := fs.Int("bits", 0, "RSA modulus size (default 3072)")
	def := keyring.DefaultSettings()
	prepublish := fs.Duration("prepublish", def.Prepublish.D(), "how long a new version is published before it signs")
	grace := fs.Duration("grace", def.Grace.D(), "how long a retired version still verifies")
	period := fs.Duration("rotation-period", 0, "rotate when the active version is this old (keys rotate --due); 0 = never")
	keep := fs.Bool("keep-retired", false, "keep versions past their grace instead of destroying them")
	emergency := fs.Bool("emergency", false, "rotate: activate the new version now and revoke the active one")
	due := fs.Bool("due", false, "rotate: every key whose rotation period has passed")
	version := fs.Int("version", 0, "version number (revoke, destroy)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	exclusive := args[0] != "list" && args[0] != "public"
	ring, cfg, closeFn, err := openRing(ctx, *cfgPath, exclusive)
	if err != nil {
		return err
	}
	defer closeFn()
	switch args[0] {
	case "create":
		a, err := jose.ParseAlgorithm(*alg)
		if err != nil {
			return fmt.Errorf("%w: --alg: %v", errUsage, err)
		}
		st := keyring.Settings{Prepublish: keyring.Duration(*prepublish), Grace: keyring.Duration(*grace),
			RotationPeriod: keyring.Duration(*period), KeepRetired: *keep}
		if err := checkSettings(cfg, *name, st); err != nil {
			return err
		}
		k, err := ring.Create(*name, a, *bits, st)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created key %s (%s), version 1, kid %s\n", k.Name, k.Alg, k.Versions[0].Kid)
	case "list":
		return listKeys(ring, stdout)
	case "public":
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
		return pem.Encode(stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	case "rotate":
		if *due {
			if *name != "" || *emergency {
				return fmt.Errorf("%w: --due rotates every due key; it takes no --name or --emergency", errUsage)
			}
			rotated, err := ring.RotateDue(ctx)
			for _, rot := range rotated {
				fmt.Fprintf(stdout, "rotated %s to version %d, kid %s (staged: signs from %s)\n", rot.Key, rot.Number, rot.Kid,
					rot.ActivateAt.Format(time.RFC3339))
			}
			if err != nil {
				return err
			}
			if len(rotated) == 0 {
				fmt.Fprintln(stdout, "no key due")
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
		fmt.Fprintf(stdout, "rotated %s to version %d, kid %s (%s)\n", k.Name, v.Number, v.Kid, how)
	case "revoke", "destroy":
		op := ring.Revoke
		if args[0] == "destroy" {
			op = ring.Destroy
		}
		k, err := op(*name, *version)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s version %d (kid %s)\n", map[string]string{"revoke": "revoked", "destroy": "destroyed"}[args[0]],
			k.Name, *version, k.Versions[*version-1].Kid)
	default:
		return fmt.Errorf("%w: unknown keys command %q", errUsage, args[0])
	}
	return nil
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

func cmdToken(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: token needs init or list", errUsage)
	}
	fs := newFlags("token " + args[0])
	module := fs.String("module", hsm.DefaultModule, "PKCS#11 module")
	label := fs.String("label", "", "token label")
	var so, user hsm.PINSource
	fs.StringVar(&so.File, "so-pin-file", "", "file holding the SO PIN")
	fs.StringVar(&so.Env, "so-pin-env", "", "environment variable holding the SO PIN")
	fs.StringVar(&user.File, "pin-file", "", "file holding the user PIN")
	fs.StringVar(&user.Env, "pin-env", "", "environment variable holding the user PIN")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "list":
		slots, err := hsm.ListSlots(*module)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLOT\tLABEL\tSERIAL\tMODEL\tSIGNERD ALGORITHMS")
		for _, s := range slots {
			if !s.TokenPresent {
				continue
			}
			if !s.Initialized {
				fmt.Fprintf(tw, "%d\t(uninitialised)\t\t%s\t\n", s.Slot, s.Model)
				continue
			}
			var algs []string
			for _, a := range algSpecs {
				if s.Supports(a.spec) {
					algs = append(algs, a.algs)
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", s.Slot, s.Label, s.Serial, s.Model, strings.Join(algs, ", "))
		}
		return tw.Flush()
	case "init":
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
		fmt.Fprintf(stdout, "initialised token %q, serial %s\n", *label, serial)
		return nil
	}
	return fmt.Errorf("%w: unknown token command %q", errUsage, args[0])
}
