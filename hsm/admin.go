package hsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// These functions administer a module directly: they initialise and finalise it themselves, so they must
// not run in a process that has a Token open.

// SlotInfo describes one slot and its token.
type SlotInfo struct {
	Slot         uint
	Description  string
	TokenPresent bool
	Initialized  bool
	Label        string
	Serial       string
	Manufacturer string
	Model        string
	// ProbeErr is why the token could not tell which mechanisms it offers (Supports is then false).
	ProbeErr error
	// mechs is what the token can generate and sign with.
	mechs map[uint]pkcs11.MechanismInfo
}

// Supports reports whether the token can generate and sign with keys of spec.
func (s SlotInfo) Supports(spec KeySpec) bool {
	return supports(s.mechs, spec)
}

func supports(mechs map[uint]pkcs11.MechanismInfo, spec KeySpec) bool {
	if spec.validate() != nil {
		return false
	}
	gen, sign := spec.mechanisms()
	g, okG := mechs[gen]
	s, okS := mechs[sign]
	if !okG || !okS || g.Flags&pkcs11.CKF_GENERATE_KEY_PAIR == 0 || s.Flags&pkcs11.CKF_SIGN == 0 {
		return false
	}
	size := uint(spec.Bits)
	switch spec.Type {
	case ECDSA:
		size = uint(spec.Curve.Params().BitSize)
	case Ed25519:
		size = 256
	}
	// Zero bounds mean the token does not say.
	inRange := func(m pkcs11.MechanismInfo) bool {
		return (m.MinKeySize == 0 || size >= m.MinKeySize) && (m.MaxKeySize == 0 || size <= m.MaxKeySize)
	}
	return inRange(g) && inRange(s)
}

// probedMechanisms are the mechanisms signerd uses.
var probedMechanisms = []uint{
	pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKM_RSA_PKCS, pkcs11.CKM_RSA_PKCS_PSS,
	pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKM_ECDSA,
	ckmECEdwardsKeyPairGen, ckmEdDSA,
}

// probeMechanismInfo asks the token in slot about each mechanism signerd uses. One it does not know
// (CKR_MECHANISM_INVALID) is left out; any other failure is the token's trouble and returned, so that it
// never passes for an algorithm the token lacks.
func probeMechanismInfo(p11 *pkcs11.Ctx, slot uint) (map[uint]pkcs11.MechanismInfo, error) {
	out := make(map[uint]pkcs11.MechanismInfo)
	for _, m := range probedMechanisms {
		info, err := p11.GetMechanismInfo(slot, []*pkcs11.Mechanism{pkcs11.NewMechanism(m, nil)})
		switch {
		case err == nil:
			out[m] = info
		case !hasCode(err, pkcs11.CKR_MECHANISM_INVALID):
			return nil, fmt.Errorf("mechanism %#x: %w", m, err)
		}
	}
	return out, nil
}

// Supports reports whether the open token can generate and sign with keys of spec.
func (t *Token) Supports(spec KeySpec) bool {
	return supports(t.mechs, spec)
}

// withModule loads and initialises module for one administrative call.
func withModule(module string, f func(*pkcs11.Ctx) error) error {
	p11 := pkcs11.New(module)
	if p11 == nil {
		return fmt.Errorf("hsm: load module %s: failed (missing file or not a PKCS#11 library)", module)
	}
	defer p11.Destroy()
	if err := p11.Initialize(); err != nil {
		return fmt.Errorf("hsm: initialise module %s: %w", module, err)
	}
	defer func() { _ = p11.Finalize() }()
	return f(p11)
}

// ListSlots lists the module's slots, their tokens and the mechanisms each token offers.
func ListSlots(module string) ([]SlotInfo, error) {
	var out []SlotInfo
	err := withModule(module, func(p11 *pkcs11.Ctx) error {
		slots, err := p11.GetSlotList(false)
		if err != nil {
			return fmt.Errorf("hsm: list slots: %w", err)
		}
		for _, s := range slots {
			si, err := p11.GetSlotInfo(s)
			if err != nil {
				return fmt.Errorf("hsm: slot %d: %w", s, err)
			}
			info := SlotInfo{Slot: s, Description: strings.TrimSpace(si.SlotDescription),
				TokenPresent: si.Flags&pkcs11.CKF_TOKEN_PRESENT != 0}
			if info.TokenPresent {
				ti, err := p11.GetTokenInfo(s)
				if err != nil {
					return fmt.Errorf("hsm: token in slot %d: %w", s, err)
				}
				info.Initialized = ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0
				info.Label, info.Serial = ti.Label, ti.SerialNumber
				info.Manufacturer, info.Model = ti.ManufacturerID, ti.Model
				// An uninitialised token is only listed to be initialised: some refuse the probe.
				if info.Initialized {
					info.mechs, info.ProbeErr = probeMechanismInfo(p11, s)
				}
			}
			out = append(out, info)
		}
		return nil
	})
	return out, err
}

// InitToken initialises the first uninitialised token of the module with label, sets its SO PIN and user
// PIN, and returns the token's serial number. It refuses a label that another token already has, since
// tokens are selected by label.
func InitToken(module, label, soPIN, userPIN string) (string, error) {
	switch {
	case label == "" || len(label) > MaxTokenLabel:
		return "", fmt.Errorf("hsm: init token: label %q: want 1 to %d bytes", label, MaxTokenLabel)
	case soPIN == "":
		return "", fmt.Errorf("hsm: init token: %w: SO PIN", ErrNoPIN)
	case userPIN == "":
		return "", fmt.Errorf("hsm: init token: %w: user PIN", ErrNoPIN)
	}
	slots, err := ListSlots(module)
	if err != nil {
		return "", err
	}
	var free *SlotInfo
	for i, s := range slots {
		if s.Initialized && s.Label == label {
			return "", fmt.Errorf("hsm: init token: a token labelled %q already exists (serial %s)", label, s.Serial)
		}
		if s.TokenPresent && !s.Initialized && free == nil {
			free = &slots[i]
		}
	}
	if free == nil {
		return "", errors.New("hsm: init token: no uninitialised token in the module")
	}
	if err := withModule(module, func(p11 *pkcs11.Ctx) error {
		if err := p11.InitToken(free.Slot, soPIN, label); err != nil {
			return fmt.Errorf("hsm: init token in slot %d: %w", free.Slot, err)
		}
		return nil
	}); err != nil {
		return "", err
	}
	// SoftHSM moves a freshly initialised token to a new slot, visible after the next C_Initialize.
	var serial string
	err = withModule(module, func(p11 *pkcs11.Ctx) error {
		slots, err := p11.GetSlotList(true)
		if err != nil {
			return fmt.Errorf("hsm: list slots: %w", err)
		}
		for _, s := range slots {
			ti, err := p11.GetTokenInfo(s)
			if err != nil || ti.Label != label || ti.Flags&pkcs11.CKF_USER_PIN_INITIALIZED != 0 {
				continue
			}
			sh, err := p11.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
			if err != nil {
				return fmt.Errorf("hsm: open session: %w", err)
			}
			defer func() { _ = p11.CloseSession(sh) }()
			if err := p11.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
				return fmt.Errorf("hsm: log in as SO: %w", err)
			}
			defer func() { _ = p11.Logout(sh) }()
			if err := p11.InitPIN(sh, userPIN); err != nil {
				return fmt.Errorf("hsm: set user PIN: %w", err)
			}
			serial = ti.SerialNumber
			return nil
		}
		return fmt.Errorf("hsm: initialised token %q not found afterwards", label)
	})
	return serial, err
}
