// Package cli runs a program made of commands, as signerd and signerctl are: it finds the command in
// the arguments ("serve", "keys create"), parses that command's own flags, prints the usage and a
// command's help, and turns the command's error into an exit status and a message on standard error.
// Both programs use it, so that they read, help and fail alike.
//
// Failures print on standard error, each line "PROGRAM: COMMAND: ...": one line for each problem of
// an error that holds several (errors.Join). A usage error prints one line that ends with where to
// read the command's usage, and exits 2.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command failed
	ExitUsage   = 2 // the command line is wrong
)

// ErrReported ends a command that failed after printing why itself (a signature that does not verify):
// the program exits 1 and prints nothing more.
var ErrReported = errors.New("failure reported")

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Usagef returns a usage error: the command line is wrong, and the program exits 2.
func Usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// Args says where a command's positional arguments may go.
type Args int

const (
	NoArgs Args = iota // the command takes none
	// ArgsAfterFlags: after the command's flags, the first argument that is not a flag ending them
	// (the flag package's rule), so that a file whose name starts with "-" after it is read as a file.
	ArgsAfterFlags
	// ArgsAnywhere: before, among or after the command's flags; "--" ends the flags.
	ArgsAnywhere
)

// Command is one command of a program. R is what its flags give the program to run it with: a
// function of the program's own making, so that each program chooses what a command receives.
type Command[R any] struct {
	Name     string // as typed: "serve", "keys create"
	Summary  string // what it does: lower case, no final period
	Synopsis string // its flags and arguments, after the name
	// Args says whether the command takes positional arguments, and where; NoArgs refuses any.
	Args Args
	// Flags defines the command's flags, and only those, on fs and returns what runs the command,
	// which checks the flags before it opens or asks for anything.
	Flags func(fs *flag.FlagSet) R
}

// Program is a command-line program made of commands. A command whose name has two words ("keys
// create") is one of a group ("keys"); a group's name may be a command of its own too.
type Program[R any] struct {
	Name string // "signerd"
	// Usage is how a command line starts before the command, "signerctl [connection flags]"; Name
	// when empty.
	Usage string
	// Intro, when set, is printed under the usage line of the program's usage.
	Intro    string
	Commands []Command[R]
	// More, when set, prints more of the program's usage after the list of commands (flags that go
	// before the command).
	More func(w io.Writer)
	// Call runs a command with its positional arguments.
	Call           func(run R, args []string) error
	Stdout, Stderr io.Writer
}

// Main runs the command that args (without the program name) name and returns the exit status.
func (p *Program[R]) Main(args []string) int {
	if len(args) == 0 {
		p.PrintUsage(p.Stderr)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	if isHelp(name) {
		p.PrintUsage(p.Stdout)
		return ExitOK
	}
	if subs := p.subcommands(name); len(subs) > 0 {
		bare, isCommand := p.lookup(name)
		switch {
		case len(rest) > 0 && isHelp(rest[0]) && !(isCommand && strings.HasPrefix(rest[0], "-")):
			p.PrintUsage(p.Stdout)
			return ExitOK
		case len(rest) > 0 && !strings.HasPrefix(rest[0], "-"):
			// An unknown subcommand is refused here, before any flag is read or anything is opened.
			c, ok := p.lookup(name + " " + rest[0])
			if !ok {
				return p.Fail(name, Usagef("unknown command %q: want %s", rest[0], orList(subs)))
			}
			return p.run(c, rest[1:])
		case isCommand:
			return p.run(bare, rest)
		default:
			return p.Fail(name, Usagef("want %s", orList(subs)))
		}
	}
	c, ok := p.lookup(name)
	if !ok {
		return p.Fail("", Usagef("unknown command %q", name))
	}
	return p.run(c, rest)
}

// run parses the command's flags, runs it and turns its error into an exit status.
func (p *Program[R]) run(c Command[R], args []string) int {
	fs := flag.NewFlagSet(p.Name+" "+c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runner := c.Flags(fs)
	var positional []string
	var err error
	if c.Args == ArgsAnywhere {
		positional, err = parseInterleaved(fs, args)
	} else if err = fs.Parse(args); err == nil {
		positional = fs.Args()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		p.printHelp(c, fs)
		return ExitOK
	case err != nil:
		return p.Fail(c.Name, Usagef("%v", err))
	case len(positional) > 0 && c.Args == NoArgs:
		return p.Fail(c.Name, Usagef("unexpected argument %q", positional[0]))
	}
	if err := p.Call(runner, positional); err != nil {
		return p.Fail(c.Name, err)
	}
	return ExitOK
}

// Fail prints err as the failure of the command cmd ("" for none) and returns the exit status: 2 for a
// usage error, 1 for any other, without a word for ErrReported.
func (p *Program[R]) Fail(cmd string, err error) int {
	if errors.Is(err, ErrReported) {
		return ExitFailure
	}
	prefix := p.Name + ": "
	if cmd != "" {
		prefix += cmd + ": "
	}
	var ue *usageError
	if errors.As(err, &ue) {
		hint := p.Name + " help"
		if _, ok := p.lookup(cmd); ok {
			hint = p.Name + " " + cmd + " -h"
		}
		fmt.Fprintf(p.Stderr, "%s%s (see '%s')\n", prefix, oneLine(err.Error()), hint)
		return ExitUsage
	}
	// A joined error (a configuration's problems, all at once) gives each problem its line.
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = oneLine(line); line != "" {
			fmt.Fprintf(p.Stderr, "%s%s\n", prefix, line)
		}
	}
	return ExitFailure
}

// PrintUsage prints the program's usage to w: the commands with what each does.
func (p *Program[R]) PrintUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s COMMAND [flags]\n", p.usageStart())
	if p.Intro != "" {
		fmt.Fprintf(w, "\n%s\n", p.Intro)
	}
	width := 0
	for _, c := range p.Commands {
		width = max(width, len(c.Name))
	}
	fmt.Fprint(w, "\ncommands:\n")
	for _, c := range p.Commands {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name, c.Summary)
	}
	if p.More != nil {
		fmt.Fprintln(w)
		p.More(w)
	}
	fmt.Fprintf(w, `
Exit status: 0 on success, 1 on failure, 2 for a usage error.
Run '%s COMMAND -h' for what a command does and its flags.
`, p.Name)
}

// printHelp prints a command's usage line, what it does and its flags to standard output.
func (p *Program[R]) printHelp(c Command[R], fs *flag.FlagSet) {
	fmt.Fprintf(p.Stdout, "usage: %s %s %s\n\n%s.\n", p.usageStart(), c.Name, c.Synopsis, upperFirst(c.Summary))
	if hasFlags(fs) {
		fmt.Fprint(p.Stdout, "\nflags:\n")
		fs.SetOutput(p.Stdout)
		fs.PrintDefaults()
	}
}

func (p *Program[R]) usageStart() string {
	if p.Usage != "" {
		return p.Usage
	}
	return p.Name
}

// lookup returns the command called name ("serve", "keys create").
func (p *Program[R]) lookup(name string) (Command[R], bool) {
	i := slices.IndexFunc(p.Commands, func(c Command[R]) bool { return c.Name == name })
	if i < 0 {
		return Command[R]{}, false
	}
	return p.Commands[i], true
}

// subcommands returns the second words of the group's commands, in the order of Commands.
func (p *Program[R]) subcommands(group string) []string {
	var subs []string
	for _, c := range p.Commands {
		if g, sub, ok := strings.Cut(c.Name, " "); ok && g == group {
			subs = append(subs, sub)
		}
	}
	return subs
}

var synopsisFlag = regexp.MustCompile(`--[a-z][a-z0-9-]*`)

// Check reports what is wrong with the program's commands, for its tests: a name that cannot be typed
// (not one or two words, a word that asks for help, a name given twice), positional arguments on a
// command that is also a group (its first one would be read as a subcommand), a summary that is not
// lower case without a final period, a synopsis that does not name exactly the flags its command
// defines.
func (p *Program[R]) Check() error {
	var errs []error
	seen := map[string]bool{}
	for _, c := range p.Commands {
		words := strings.Fields(c.Name)
		switch {
		case len(words) < 1 || len(words) > 2 || strings.Join(words, " ") != c.Name || slices.ContainsFunc(words, func(w string) bool { return isHelp(w) || strings.HasPrefix(w, "-") }):
			errs = append(errs, fmt.Errorf("%s %q: want one or two words, none a flag or help", p.Name, c.Name))
		case seen[c.Name]:
			errs = append(errs, fmt.Errorf("%s %s: defined twice", p.Name, c.Name))
		case len(words) == 1 && c.Args != NoArgs && len(p.subcommands(c.Name)) > 0:
			errs = append(errs, fmt.Errorf("%s %s: takes positional arguments and is a group: the first would be read as a subcommand", p.Name, c.Name))
		}
		seen[c.Name] = true
		if c.Summary == "" || strings.HasSuffix(c.Summary, ".") || capitalized(strings.Fields(c.Summary)[0]) {
			errs = append(errs, fmt.Errorf("%s %s: summary %q: want lower case without a final period", p.Name, c.Name, c.Summary))
		}
		var named []string
		for _, f := range synopsisFlag.FindAllString(c.Synopsis, -1) {
			if !slices.Contains(named, f[2:]) {
				named = append(named, f[2:])
			}
		}
		defined := FlagNames(c)
		slices.Sort(named)
		slices.Sort(defined)
		if !slices.Equal(named, defined) {
			errs = append(errs, fmt.Errorf("%s %s: synopsis names flags %q, the command defines %q", p.Name, c.Name, named, defined))
		}
	}
	return errors.Join(errs...)
}

// capitalized reports whether word is written as a sentence's first word ("Lists"; not "JWKS", "x509").
func capitalized(word string) bool {
	first, n := utf8.DecodeRuneInString(word)
	return unicode.IsUpper(first) && strings.ToUpper(word[n:]) != word[n:]
}

// FlagNames returns the names of the flags that c defines.
func FlagNames[R any](c Command[R]) []string {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	c.Flags(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// parseInterleaved parses flags that may come before, between or after positional arguments, and
// returns the positional ones. Everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// fs.Parse stops at the first positional argument, or just after a "--", which it consumes.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// oneLine collapses the white space in s, new lines included, to single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// upperFirst capitalizes the first letter of an ASCII string.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
