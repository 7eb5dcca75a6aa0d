package audit

import (
	"encoding/json"
	"strconv"
	"strings"
)

// appendJSON appends e as encoding/json marshals it (the form Verify rebuilds and compares), without
// reflection: two lines are written for every signature, and json.Marshal's reflection was a tenth of
// the daemon's time spent outside the token. Strings that need escaping go through encoding/json
// itself, so that the output is json.Marshal's byte for byte, but for invalid UTF-8, which is written
// as U+FFFD (see appendString): every line it writes is one Verify rebuilds as it is
// (TestAppendJSONIsMarshal, FuzzAppendJSON).
func (e *Event) appendJSON(dst []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `{"`+FieldTime+`":"`...)
	dst, err := e.Time.AppendText(dst)
	if err != nil {
		return dst[:start], err
	}
	dst = append(dst, `","`+FieldSeq+`":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	dst = appendMember(dst, FieldIdentity, e.Identity, false)
	dst = appendMember(dst, FieldOp, e.Op, false)
	dst = appendMember(dst, FieldKey, e.Key, true)
	dst = appendMember(dst, FieldKid, e.Kid, true)
	dst = appendMember(dst, FieldAlg, e.Alg, true)
	dst = appendMember(dst, FieldInput, e.Input, true)
	if c := e.Claims; c != nil {
		dst = append(dst, `,"`+FieldClaims+`":{`...)
		n := len(dst)
		dst = appendMember(dst, "iss", c.Iss, true)
		dst = appendMember(dst, "sub", c.Sub, true)
		if len(c.Aud) > 0 {
			dst = append(dst, `,"aud":[`...)
			for i, a := range c.Aud {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendString(dst, a)
			}
			dst = append(dst, ']')
		}
		if c.Exp != 0 {
			dst = append(dst, `,"exp":`...)
			dst = strconv.AppendInt(dst, c.Exp, 10)
		}
		dst = appendMember(dst, "jti", c.Jti, true)
		if len(dst) > n {
			dst = append(dst[:n], dst[n+1:]...) // the first member's comma
		}
		dst = append(dst, '}')
	}
	dst = appendMember(dst, FieldOutcome, e.Outcome, false)
	dst = appendMember(dst, FieldCode, e.Code, true)
	dst = appendMember(dst, FieldReason, e.Reason, true)
	dst = appendMember(dst, FieldPrev, e.Prev, false)
	dst = appendMember(dst, FieldHash, e.Hash, false)
	return append(dst, '}'), nil
}

// appendMember appends `,"name":value`, or nothing for an empty value that is omitted when empty.
func appendMember(dst []byte, name, value string, omitEmpty bool) []byte {
	if omitEmpty && value == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, value)
}

// appendString appends s as a JSON string the way encoding/json writes it: as is between quotes when
// no byte of it needs escaping (printable ASCII other than `"`, `\` and the HTML characters encoding/json
// escapes), and through encoding/json otherwise. An invalid UTF-8 byte becomes U+FFFD first:
// encoding/json would write it as the escape \ufffd, which decodes to U+FFFD and marshals again as the
// character itself, so the line would not be the one Verify rebuilds.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(strings.ToValidUTF8(s, "\uFFFD")) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
