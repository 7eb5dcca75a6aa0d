package main

import (
	"reflect"
	"strings"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/server/authz"
)

// reload re-reads the keys, the config file, the TLS material and the policy. The configuration is
// validated whole first; on any error in it the old configuration stays. The keys are refreshed first,
// so that the policy is checked against the token's keys as they are now, but a key's trouble does not
// hold the configuration back: a renewed certificate or a withdrawn grant must not wait for an unrelated
// key (one whose key pair is missing, say) to be repaired. The refresh publishes what it could load,
// as the refresh loop does.
func (d *daemon) reload() {
	if err := d.ring.Refresh(); err != nil {
		d.log.Error("reload: key refresh failed", "err", err)
	}
	if d.cfgPath == "" {
		return
	}
	cfg, err := config.Load(d.cfgPath)
	var policy *authz.Authorizer
	if err == nil {
		policy, err = authz.Compile(cfg.Policy, d.ring.Snapshot().Exists)
	}
	var files *tlsFiles
	if err == nil {
		files, err = loadTLS(cfg)
	}
	if err != nil {
		d.log.Error("reload failed; keeping the previous configuration", "err", err)
		return
	}
	d.useTLS(files)
	d.srv.SetPolicy(policy)
	if fields := restartNeeded(d.started, cfg); len(fields) > 0 {
		d.log.Warn("reload: these settings changed but take effect only at the next start", "fields", strings.Join(fields, ", "))
	}
	d.warnShortSettings(minPrepublish(d.started), policy) // the JWKS max-age in effect is the start's
	d.log.Info("reloaded", "keys", len(d.ring.Snapshot().Names()))
}

// restartNeeded lists, by their YAML paths, the settings of next that differ from running's and that a
// reload does not apply: all but the policy and the TLS material (tls.*, http.cert_file, http.key_file).
func restartNeeded(running, next *config.Config) []string {
	a, b := *running, *next
	for _, c := range []*config.Config{&a, &b} {
		c.Policy, c.TLS = authz.Policy{}, config.TLS{}
		c.HTTP.CertFile, c.HTTP.KeyFile = "", ""
	}
	var out []string
	diffFields("", reflect.ValueOf(a), reflect.ValueOf(b), &out)
	return out
}

// diffFields appends to out the YAML path of each field that differs between a and b, structs of the
// same type: a top-level section's fields one by one, inline structs as their fields.
func diffFields(prefix string, a, b reflect.Value, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		fa, fb := a.Field(i), b.Field(i)
		switch {
		case !f.IsExported():
		case name == "" && f.Type.Kind() == reflect.Struct:
			diffFields(prefix, fa, fb, out)
		case prefix == "" && f.Type.Kind() == reflect.Struct:
			diffFields(name+".", fa, fb, out)
		case !reflect.DeepEqual(fa.Interface(), fb.Interface()):
			*out = append(*out, prefix+name)
		}
	}
}

// yamlName is the name field f has in the configuration file.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}
