package hsm

import (
	"fmt"
	"slices"

	"github.com/miekg/pkcs11"
)

// Application is the CKA_APPLICATION of every data object signerd writes; objects of other applications
// are never read or touched.
const Application = "signerd"

// Record is one of signerd's metadata objects in the token: a CKO_DATA object whose CKA_LABEL is Name and
// whose CKA_VALUE is Value. Records are private objects, readable only after login.
type Record struct {
	Name  string
	Value []byte
}

// Records returns the signerd records in the token named name, or all of them if name is empty.
func (t *Token) Records(name string) ([]Record, error) {
	var out []Record
	err := t.local.read(func() error {
		return t.with("read records", func(s pkcs11.SessionHandle) error {
			handles, err := t.findObjects(s, recordTemplate(name))
			if err != nil {
				return err
			}
			if len(handles) == 0 {
				if err := t.noPrivateObjects("read records", s, nil); err != nil {
					return err
				}
			}
			out = make([]Record, 0, len(handles))
			for _, h := range handles {
				attrs, err := t.p11.GetAttributeValue(s, h, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
					pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil),
				})
				if err != nil {
					return fmt.Errorf("read record attributes: %w", err)
				}
				out = append(out, Record{Name: string(attrs[0].Value), Value: attrs[1].Value})
			}
			return nil
		})
	})
	return out, err
}

// PutRecord writes the record name. SoftHSM makes CKA_VALUE of a data object read-only once created, so
// a new object is created first and the old ones are destroyed after it: a crash in between leaves two
// objects with the same name, never none. Records returns both in that case; the caller's value must say
// which is newer (keyring records carry a revision).
func (t *Token) PutRecord(name string, value []byte) error {
	if name == "" {
		return invalidInput("put record", "empty name")
	}
	return t.local.write(func() error { return t.putRecord(name, value) })
}

func (t *Token) putRecord(name string, value []byte) error {
	return t.with("put record "+name, func(s pkcs11.SessionHandle) error {
		old, err := t.findObjects(s, recordTemplate(name))
		if err != nil {
			return err
		}
		if _, err := t.createData(s, recordTemplate(name), value); err != nil {
			return fmt.Errorf("create record: %w", err)
		}
		// The new record is written; an old one that cannot be destroyed now is harmless (readers take
		// the higher revision) and goes at the next write. Failing here would make the caller undo a
		// change the token already holds.
		for _, h := range old {
			_ = t.p11.DestroyObject(s, h)
		}
		return nil
	})
}

// recordTemplate matches key records: all of them, or key name's.
func recordTemplate(name string) []*pkcs11.Attribute { return dataTemplate(Application, name) }

// dataTemplate matches signerd's CKO_DATA objects of application app: all of them, or those labelled
// label.
func dataTemplate(app, label string) []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, app),
	}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	return tmpl
}

// createData creates a private token data object that tmpl (a dataTemplate) matches, holding value.
func (t *Token) createData(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, value []byte) (pkcs11.ObjectHandle, error) {
	return t.p11.CreateObject(s, append(slices.Clip(tmpl),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value)))
}

// reindex makes the token re-read its object list now, before a write (see localLock). Any search does.
func (t *Token) reindex(s pkcs11.SessionHandle) error {
	_, err := t.findObjects(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, "signerd-reindex")})
	return err
}

// findObjects returns every object matching tmpl.
func (t *Token) findObjects(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := t.p11.FindObjectsInit(s, tmpl); err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	var out []pkcs11.ObjectHandle
	for {
		batch, _, err := t.p11.FindObjects(s, 64)
		if err != nil {
			_ = t.p11.FindObjectsFinal(s)
			return nil, fmt.Errorf("find objects: %w", err)
		}
		// A token may return a short batch before the end: only an empty one ends the search.
		if len(batch) == 0 {
			break
		}
		out = append(out, batch...)
	}
	if err := t.p11.FindObjectsFinal(s); err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	return out, nil
}
