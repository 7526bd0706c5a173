//! A getopt_long-compatible argument parser: qemu-img's commands take short
//! options (`-f fmt`, `-ffmt`, clustered `-qp`), long options (`--format fmt`,
//! `--format=fmt`), and options after positional arguments (GNU permutation);
//! `--` ends option parsing. Error texts match getopt's.

/// One option a command accepts.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    pub short: Option<char>,
    pub long: Option<&'static str>,
    pub has_arg: bool,
    /// Identifier the command matches on (the long name or short letter).
    pub id: &'static str,
}

/// Shorthand constructor.
pub const fn opt(
    short: Option<char>,
    long: Option<&'static str>,
    has_arg: bool,
    id: &'static str,
) -> Opt {
    Opt {
        short,
        long,
        has_arg,
        id,
    }
}

/// Parsed command line of one command.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Options in order: (id, argument).
    pub opts: Vec<(&'static str, Option<String>)>,
    /// Positional arguments in order.
    pub args: Vec<String>,
}

impl Parsed {
    /// True if the option was given at least once.
    pub fn has(&self, id: &str) -> bool {
        self.opts.iter().any(|(i, _)| *i == id)
    }

    /// The last value given for an option.
    pub fn last(&self, id: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .and_then(|(_, v)| v.as_deref())
    }

    /// All values given for an option, in order.
    pub fn all(&self, id: &str) -> Vec<&str> {
        self.opts
            .iter()
            .filter(|(i, _)| *i == id)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
}

/// Parses `argv` (without the program and command names) for command `cmd`.
/// Errors carry getopt's message, e.g. "invalid option -- 'z'".
pub fn parse(argv: &[String], spec: &[Opt]) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "--" {
            p.args.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            // Exact match first, then a unique prefix, as getopt_long does.
            let exact = spec.iter().find(|o| o.long == Some(name));
            let o = match exact {
                Some(o) => o,
                None => {
                    let cands: Vec<&Opt> = spec
                        .iter()
                        .filter(|o| o.long.is_some_and(|l| l.starts_with(name)))
                        .collect();
                    match cands.as_slice() {
                        [one] => *one,
                        [] => return Err(format!("unrecognized option '{a}'")),
                        _ => return Err(format!("option '{a}' is ambiguous")),
                    }
                }
            };
            let full = o.long.unwrap_or(name);
            if o.has_arg {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        if i < argv.len() {
                            i += 1;
                            argv[i - 1].clone()
                        } else {
                            return Err(format!("option '--{full}' requires an argument"));
                        }
                    }
                };
                p.opts.push((o.id, Some(v)));
            } else {
                if inline.is_some() {
                    return Err(format!("option '--{full}' doesn't allow an argument"));
                }
                p.opts.push((o.id, None));
            }
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(o) = spec.iter().find(|o| o.short == Some(c)) else {
                    return Err(format!("invalid option -- '{c}'"));
                };
                if o.has_arg {
                    let rest: String = chars[j..].iter().collect();
                    let v = if !rest.is_empty() {
                        rest
                    } else if i < argv.len() {
                        i += 1;
                        argv[i - 1].clone()
                    } else {
                        return Err(format!("option requires an argument -- '{c}'"));
                    };
                    p.opts.push((o.id, Some(v)));
                    break;
                }
                p.opts.push((o.id, None));
            }
            continue;
        }
        p.args.push(a.clone());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[Opt] = &[
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('p'), Some("progress"), false, "progress"),
        opt(None, Some("output"), true, "output"),
        opt(None, Some("object"), true, "object"),
    ];

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn permutes_and_clusters() {
        let p = parse(&v(&["a.img", "-qpfqcow2", "--output=json", "b"]), SPEC)
            .expect("valid command line");
        assert_eq!(p.args, vec!["a.img", "b"]);
        assert!(p.has("quiet") && p.has("progress"));
        assert_eq!(p.last("format"), Some("qcow2"));
        assert_eq!(p.last("output"), Some("json"));
    }

    #[test]
    fn errors_like_getopt() {
        assert_eq!(
            parse(&v(&["-z"]), SPEC).err(),
            Some("invalid option -- 'z'".into())
        );
        assert_eq!(
            parse(&v(&["--bogus"]), SPEC).err(),
            Some("unrecognized option '--bogus'".into())
        );
        assert_eq!(
            parse(&v(&["-f"]), SPEC).err(),
            Some("option requires an argument -- 'f'".into())
        );
        assert_eq!(
            parse(&v(&["--o", "x"]), SPEC).err(),
            Some("option '--o' is ambiguous".into())
        );
        let p = parse(&v(&["--", "-1"]), SPEC).expect("-- ends options");
        assert_eq!(p.args, vec!["-1"]);
    }
}
