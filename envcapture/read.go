package envcapture

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Read parses an environment written by [Write] in the given syntax and returns it as
// "KEY=value" entries: in file order for docker and posix (a repeated name keeps its
// first position and takes its last value), sorted by name for json.
//
// It accepts what Write produces plus blank lines and # comments, not the whole of
// each format:
//
//   - docker: compose v2 rules for KEY=value lines with an optional "export " prefix;
//     bare values (up to " #", trailing blanks trimmed), single-quoted values taken
//     literally except for \' and double-quoted values with the escapes \n \r \t \a
//     \b \f \v \\ \" \$ (any other backslash is kept, so octal escapes are not
//     decoded). `$$` stands for `$` in bare and double-quoted values; any other `$`
//     would be interpolated by compose and is an error here, as is text after a
//     closing quote.
//   - posix: export KEY=WORD lines where WORD is made of single-quoted strings,
//     backslash-escaped characters and plain characters (letters, digits, _-.,/:@%+=).
//   - json: one object whose values are all strings.
func Read(r io.Reader, syntax Syntax) ([]string, error) {
	if _, err := ParseSyntax(string(syntax)); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("envcapture: reading %s environment: %w", syntax, err)
	}
	if syntax == SyntaxJSON {
		var m map[string]string
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("envcapture: reading json environment: %w", err)
		}
		if m == nil {
			return nil, fmt.Errorf("envcapture: reading json environment: not an object")
		}
		out := make([]string, 0, len(m))
		for _, name := range slices.Sorted(maps.Keys(m)) {
			if name == "" || strings.Contains(name, "=") {
				return nil, fmt.Errorf("envcapture: reading json environment: invalid name %q", name)
			}
			out = append(out, name+"="+m[name])
		}
		return out, nil
	}
	p := &lineParser{src: string(data), line: 1, syntax: syntax}
	var env []string
	for {
		name, value, ok, err := p.next()
		if err != nil {
			return nil, fmt.Errorf("envcapture: reading %s environment: line %d: %w", syntax, p.line, err)
		}
		if !ok {
			break
		}
		env = append(env, name+"="+value)
	}
	names, values, _ := collect(env)
	out := make([]string, len(names))
	for i, name := range names {
		out[i] = name + "=" + values[name]
	}
	return out, nil
}

// lineParser reads docker and posix statements from src.
type lineParser struct {
	src    string
	pos    int
	line   int
	syntax Syntax
}

func (p *lineParser) eof() bool  { return p.pos >= len(p.src) }
func (p *lineParser) peek() byte { return p.src[p.pos] }

// advance consumes one byte, counting lines.
func (p *lineParser) advance() byte {
	c := p.src[p.pos]
	p.pos++
	if c == '\n' {
		p.line++
	}
	return c
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

func (p *lineParser) skipBlanks() {
	for !p.eof() && isBlank(p.peek()) {
		p.pos++
	}
}

// next returns the next statement; ok is false at the end of the input.
func (p *lineParser) next() (name, value string, ok bool, err error) {
	for {
		p.skipBlanks()
		if p.eof() {
			return "", "", false, nil
		}
		switch p.peek() {
		case '\n':
			p.advance()
			continue
		case '#':
			p.skipLine()
			continue
		}
		break
	}
	if rest := p.src[p.pos:]; strings.HasPrefix(rest, "export") && len(rest) > 6 && isBlank(rest[6]) {
		p.pos += 6
		p.skipBlanks()
	} else if p.syntax == SyntaxPOSIX {
		return "", "", false, fmt.Errorf("want an export statement")
	}
	start := p.pos
	for !p.eof() && p.peek() != '=' && p.peek() != '\n' {
		p.pos++
	}
	name = p.src[start:p.pos]
	valid := dockerName(name)
	if p.syntax == SyntaxPOSIX {
		valid = posixName(name)
	}
	if p.eof() || p.peek() != '=' || !valid {
		return "", "", false, fmt.Errorf("want NAME=value, got %q", p.src[start:p.pos])
	}
	p.pos++ // '='
	if p.syntax == SyntaxPOSIX {
		value, err = p.shellWord()
	} else {
		value, err = p.dockerValue()
	}
	if err != nil {
		return "", "", false, err
	}
	return name, value, true, p.endOfStatement()
}

func (p *lineParser) skipLine() {
	for !p.eof() && p.peek() != '\n' {
		p.pos++
	}
}

// endOfStatement accepts blanks and an optional comment up to the end of the line.
func (p *lineParser) endOfStatement() error {
	p.skipBlanks()
	if p.eof() {
		return nil
	}
	switch p.peek() {
	case '\n':
		p.advance()
		return nil
	case '#':
		p.skipLine()
		return nil
	}
	return fmt.Errorf("unexpected %q after the value", p.src[p.pos:p.lineEnd()])
}

func (p *lineParser) lineEnd() int {
	if i := strings.IndexByte(p.src[p.pos:], '\n'); i >= 0 {
		return p.pos + i
	}
	return len(p.src)
}

// quoted reads a quoted string starting at the opening quote, up to the matching
// closing quote; a backslash before the quote character escapes it and drops out,
// any other backslash is kept with the character after it (compose's rule).
func (p *lineParser) quoted() (string, error) {
	q := p.advance()
	var b strings.Builder
	for !p.eof() {
		c := p.advance()
		switch {
		case c == q:
			return b.String(), nil
		case c == '\\' && !p.eof():
			if n := p.advance(); n == q {
				b.WriteByte(n)
			} else {
				b.WriteByte(c)
				b.WriteByte(n)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated %c-quoted value", q)
}

func (p *lineParser) dockerValue() (string, error) {
	p.skipBlanks()
	if p.eof() {
		return "", nil
	}
	switch p.peek() {
	case '\'':
		return p.quoted()
	case '"':
		raw, err := p.quoted()
		if err != nil {
			return "", err
		}
		return unescapeDouble(raw)
	}
	end := p.lineEnd()
	raw := p.src[p.pos:end]
	p.pos = end
	if i := strings.Index(raw, " #"); i >= 0 {
		raw = raw[:i]
	}
	return undollar(strings.TrimRight(raw, " \t\r"))
}

// unescapeDouble applies compose's double-quote escapes and `$$`.
func unescapeDouble(raw string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '\\' && i+1 < len(raw):
			i++
			switch n := raw[i]; n {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'v':
				b.WriteByte('\v')
			case '\\', '"', '$':
				b.WriteByte(n)
			default:
				b.WriteByte(c)
				b.WriteByte(n)
			}
		case c == '$':
			if i+1 >= len(raw) || raw[i+1] != '$' {
				return "", errInterpolation
			}
			i++
			b.WriteByte('$')
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

var errInterpolation = fmt.Errorf("variable interpolation is not supported (write a literal $ as $$)")

// undollar turns `$$` into `$` in a bare value.
func undollar(raw string) (string, error) {
	if !strings.Contains(raw, "$") {
		return raw, nil
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == '$' {
			if i+1 >= len(raw) || raw[i+1] != '$' {
				return "", errInterpolation
			}
			i++
		}
		b.WriteByte(raw[i])
	}
	return b.String(), nil
}

// shellWord reads a POSIX shell word made of single-quoted strings, backslash escapes
// and plain characters.
func (p *lineParser) shellWord() (string, error) {
	var b strings.Builder
	for !p.eof() {
		switch c := p.peek(); {
		case c == '\'':
			p.advance()
			end := strings.IndexByte(p.src[p.pos:], '\'')
			if end < 0 {
				return "", fmt.Errorf("unterminated '-quoted value")
			}
			for range end {
				b.WriteByte(p.advance())
			}
			p.advance()
		case c == '\\':
			p.advance()
			if p.eof() {
				return "", fmt.Errorf("backslash at end of input")
			}
			if n := p.advance(); n != '\n' { // backslash-newline is a line continuation
				b.WriteByte(n)
			}
		case isPlain(c):
			b.WriteByte(p.advance())
		case isBlank(c) || c == '\n':
			return b.String(), nil
		default:
			return "", fmt.Errorf("unsupported character %q in value", c)
		}
	}
	return b.String(), nil
}
