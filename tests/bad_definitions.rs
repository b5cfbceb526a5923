//! Bad machine definitions, one per row: each must be refused with a diagnostic that names
//! the right key, points at the right line and column, underlines the offending text, and
//! says what is wrong (and, where it can, what would be right).

use std::path::Path;

use mm::definition::{Definition, Diagnostic};

/// Prefixes a definition's text with a valid `[image]` table (two lines), so that a row
/// only has to write the part it is about. Offending lines in such rows start at line 3.
macro_rules! with_image {
    ($rest:expr) => {
        concat!("[image]\nsource = \"docker://busybox\"\n", $rest)
    };
}

const PATH: &str = "machines/web.toml";

/// One bad definition and what its first diagnostic must say.
#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    /// The path the text is "read" from; the machine is named after it.
    path: &'static str,
    text: &'static str,
    /// The dotted key, or `None` for a problem with the file as a whole.
    key: Option<&'static str>,
    /// 1-based line; `None` means the diagnostic must have no location at all.
    line: Option<usize>,
    /// 1-based column, where meaningful.
    column: Option<usize>,
    /// The exact text the caret underlines (clamped to its line).
    caret: Option<&'static str>,
    /// A substring the message must contain.
    message: &'static str,
    /// A substring one of the help lines must contain.
    help: Option<&'static str>,
    /// A substring that must appear nowhere in the rendered diagnostic.
    unwanted: Option<&'static str>,
}

fn bad(name: &'static str, text: &'static str) -> Row {
    Row {
        name,
        path: PATH,
        text,
        key: None,
        line: None,
        column: None,
        caret: None,
        message: "",
        help: None,
        unwanted: None,
    }
}

impl Row {
    fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }
    fn key(mut self, key: &'static str) -> Self {
        self.key = Some(key);
        self
    }
    /// Line and column, with the text the caret must underline there.
    fn at(mut self, line: usize, column: usize, caret: &'static str) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self.caret = Some(caret);
        self
    }
    fn line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
    fn column(mut self, column: usize) -> Self {
        self.column = Some(column);
        self
    }
    fn message(mut self, message: &'static str) -> Self {
        self.message = message;
        self
    }
    fn help(mut self, help: &'static str) -> Self {
        self.help = Some(help);
        self
    }
    fn unwanted(mut self, text: &'static str) -> Self {
        self.unwanted = Some(text);
        self
    }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        // ---- TOML syntax ----------------------------------------------------------------
        bad("syntax: unclosed table header", "[image\nsource = \"docker://busybox\"\n")
            .line(1).column(7)
            .message("TOML syntax"),
        bad("syntax: unterminated string", "[image]\nsource = \"docker://busybox\n")
            .line(2).column(27)
            .message("TOML syntax"),
        bad("syntax: unterminated string, CRLF line ends", "[image]\r\nsource = \"docker://busybox\r\n")
            .line(2).column(27)
            .message("TOML syntax"),
        bad("syntax: duplicate key", "[image]\nsource = \"docker://busybox\"\nsource = \"docker://alpine\"\n")
            .at(3, 1, "source")
            .message("duplicate key")
            .help("may appear only once"),
        bad("syntax: duplicate table", with_image!("[exec]\nboot = true\n[image]\ndigest = \"x\"\n"))
            .at(5, 2, "image")
            .message("duplicate key")
            .help("each key and each [table] may appear only once"),

        // ---- unknown keys, with suggestions ------------------------------------------------
        bad("unknown top-level key", concat!("descripton = \"x\"\n", with_image!("")))
            .key("descripton").at(1, 1, "descripton")
            .message("unknown key `descripton` in the top level")
            .help("did you mean `description`?"),
        bad("unknown key in [image]", with_image!("digets = \"sha256:aa\"\n"))
            .key("image.digets").at(3, 1, "digets")
            .message("unknown key `digets` in [image]")
            .help("did you mean `digest`?"),
        bad("unknown key in [exec]", with_image!("[exec]\ncomand = [\"/bin/sh\"]\n"))
            .key("exec.comand").at(4, 1, "comand")
            .message("unknown key `comand` in [exec]")
            .help("did you mean `command`?"),
        bad("unknown key in [exec], dotted at the top level", concat!("exec.comand = [\"x\"]\n", with_image!("")))
            .key("exec.comand").at(1, 6, "comand")
            .message("unknown key `comand` in [exec]")
            .help("did you mean `command`?"),
        bad("unknown key in [storage]", with_image!("[storage]\npersistant = true\n"))
            .key("storage.persistant").at(4, 1, "persistant")
            .message("unknown key `persistant` in [storage]")
            .help("did you mean `persistent`?"),
        bad("unknown key in [[storage.binds]]", with_image!("[[storage.binds]]\nsource = \"/a\"\ntargt = \"/b\"\n"))
            .key("storage.binds[0].targt").at(5, 1, "targt")
            .message("unknown key `targt` in [storage.binds]")
            .help("did you mean `target`?"),
        bad("unknown key in an inline bind, second element",
            with_image!("[storage]\nbinds = [{ source = \"/a\", target = \"/a\" }, { source = \"/b\", targt = \"/b\" }]\n"))
            .key("storage.binds[1].targt").at(4, 61, "targt")
            .help("did you mean `target`?"),
        bad("unknown key in [users]", with_image!("[users]\nrnage = \"auto\"\n"))
            .key("users.rnage").at(4, 1, "rnage")
            .help("did you mean `range`?"),
        bad("unknown key in [network]", with_image!("[network]\nmdoe = \"host\"\n"))
            .key("network.mdoe").at(4, 1, "mdoe")
            .message("unknown key `mdoe` in [network]")
            .help("did you mean `mode`?"),
        bad("unknown key in [resources]", with_image!("[resources]\nmemroy = \"1G\"\n"))
            .key("resources.memroy").at(4, 1, "memroy")
            .message("unknown key `memroy` in [resources]")
            .help("did you mean `memory`?"),
        bad("unknown key in [security]", with_image!("[security]\nno_new_privilege = true\n"))
            .key("security.no_new_privilege").at(4, 1, "no_new_privilege")
            .message("unknown key `no_new_privilege` in [security]")
            .help("did you mean `no_new_privileges`?"),
        bad("unknown sub-table of [image]", with_image!("[image.extra]\n"))
            .key("image.extra").at(3, 8, "extra")
            .message("unknown key `extra` in [image]")
            .help("valid keys here: source, digest"),

        // ---- wrong types -------------------------------------------------------------------
        bad("boot is a string", with_image!("[exec]\nboot = \"yes\"\n"))
            .key("exec.boot").at(4, 8, "\"yes\"")
            .message("expected a boolean"),
        bad("boot is a string, indented with a tab", with_image!("[exec]\n\tboot = \"yes\"\n"))
            .key("exec.boot").at(4, 9, "\"yes\"")
            .message("expected a boolean"),
        bad("command is a string", with_image!("[exec]\ncommand = \"/bin/sh\"\n"))
            .key("exec.command").at(4, 11, "\"/bin/sh\"")
            .message("invalid type: string \"/bin/sh\""),
        bad("command holds a number", with_image!("[exec]\ncommand = [\"a\", 1]\n"))
            .key("exec.command[1]").at(4, 17, "1")
            .message("expected a string"),
        bad("cpus is a string", with_image!("[resources]\ncpus = \"2\"\n"))
            .key("resources.cpus").at(4, 8, "\"2\"")
            .message("invalid type: string \"2\""),
        bad("cpu_weight is zero", with_image!("[resources]\ncpu_weight = 0\n"))
            .key("resources.cpu_weight").at(4, 14, "0")
            .message("from 1 to 10000"),
        bad("pids is negative", with_image!("[resources]\npids = -1\n"))
            .key("resources.pids").at(4, 8, "-1")
            .message("greater than 0"),
        bad("description is a number", "description = 5\n[image]\nsource = \"docker://busybox\"\n")
            .key("description").at(1, 15, "5")
            .message("expected a string"),
        bad("env value is a number", with_image!("[exec]\nenv.A = 1\n"))
            .key("exec.env.A").at(4, 9, "1")
            .message("expected a string"),
        bad("binds written as a single table", with_image!("[storage.binds]\nsource = \"/a\"\n"))
            .key("storage.binds").line(3).column(1)
            .message("expected an array")
            .help("two brackets"),
        bad("image is a string, not a table", "image = \"docker://busybox\"\n")
            .key("image").at(1, 9, "\"docker://busybox\"")
            .message("table")
            .unwanted("RawImage"),
        bad("pids beyond 64 bits", with_image!("[resources]\npids = 99999999999999999999\n"))
            .key("resources.pids").at(4, 8, "99999999999999999999")
            .message("too large")
            .unwanted("i128"),

        // ---- [image] -----------------------------------------------------------------------
        bad("missing [image]", "[exec]\nboot = true\n")
            .line(1).column(1)
            .message("no [image] table")
            .help("add `[image]`"),
        bad("missing [image] in an empty file", "")
            .line(1).column(1)
            .message("no [image] table"),
        bad("a digest pin on a rootfs: source", "[image]\nsource = \"rootfs:/srv/root\"\ndigest = \"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n[exec]\ncommand = [\"/bin/sh\"]\n")
            .key("image.digest").at(3, 10, "\"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"")
            .message("cannot apply"),
        bad("a digest pin that contradicts the source's", "[image]\nsource = \"docker://busybox@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\ndigest = \"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\n")
            .key("image.digest").at(3, 10, "\"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"")
            .message("the source names sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        bad("missing image.source", "[exec]\nboot = true\n[image]\ndigest = \"sha256:aa\"\n")
            .key("image").at(3, 1, "[image]")
            .message("missing key `source`"),
        bad("unknown source transport", "[image]\nsource = \"ocii:./img\"\n")
            .key("image.source").at(2, 10, "\"ocii:./img\"")
            .message("unknown transport `ocii:`")
            .help("did you mean `oci:`?"),
        bad("source with no transport", "[image]\nsource = \"./busybox\"\n")
            .key("image.source").at(2, 10, "\"./busybox\"")
            .message("no transport")
            .help("sources: oci:PATH[:REF]"),
        bad("source with no transport, CRLF line ends", "[image]\r\nsource = \"./busybox\"\r\n")
            .key("image.source").at(2, 10, "\"./busybox\"")
            .message("no transport"),
        bad("docker: without //", "[image]\nsource = \"docker:busybox\"\n")
            .key("image.source").at(2, 10, "\"docker:busybox\"")
            .message("with two slashes"),
        bad("registry repository in uppercase", "[image]\nsource = \"docker://Busybox\"\n")
            .key("image.source").at(2, 10, "\"docker://Busybox\"")
            .message("`library/Busybox` is not a valid repository name"),
        bad("a containers-storage: store without its closing bracket", "[image]\nsource = \"containers-storage:[overlay@/s localhost/x:1\"\n")
            .key("image.source").at(2, 10, "\"containers-storage:[overlay@/s localhost/x:1\"")
            .message("is not a containers-storage store"),
        bad("a committed image with a bad name", "[image]\nsource = \"mm:bad/name\"\n")
            .key("image.source").at(2, 10, "\"mm:bad/name\"")
            .message("`bad/name` is not a valid tag"),
        bad("bad reference on an OCI layout", "[image]\nsource = \"oci:./img:bad!tag\"\n")
            .key("image.source").at(2, 10, "\"oci:./img:bad!tag\"")
            .message("`bad!tag` is not an image reference"),
        bad("bad reference in a docker-archive", "[image]\nsource = \"docker-archive:all.tar:a//b\"\n")
            .key("image.source").at(2, 10, "\"docker-archive:all.tar:a//b\"")
            .message("`a//b` is not an image reference"),
        bad("bad source index in a docker-archive", "[image]\nsource = \"docker-archive:all.tar:@first\"\n")
            .key("image.source").at(2, 10, "\"docker-archive:all.tar:@first\"")
            .message("`@first` is not a source index"),
        bad("empty tag on a registry image", "[image]\nsource = \"docker://busybox:\"\n")
            .key("image.source").line(2).column(10)
            .message("is not a valid tag"),
        bad("bad digest pin in image.digest", "[image]\nsource = \"docker://busybox\"\ndigest = \"sha256:1234\"\n")
            .key("image.digest").at(3, 10, "\"sha256:1234\"")
            .message("`sha256:1234` is not a sha256 digest"),
        bad("bad digest pin in the source", "[image]\nsource = \"docker://busybox@md5:1234\"\n")
            .key("image.source").at(2, 10, "\"docker://busybox@md5:1234\"")
            .message("`md5:1234` is not a sha256 digest"),
        bad("rootfs: with no path", "[image]\nsource = \"rootfs:\"\n")
            .key("image.source").at(2, 10, "\"rootfs:\"")
            .message("`rootfs:` needs a path after the colon"),

        // ---- [exec] ------------------------------------------------------------------------
        bad("empty command", with_image!("[exec]\ncommand = []\n"))
            .key("exec.command").at(4, 11, "[]")
            .message("the command is empty")
            .help("leave `command` out"),
        bad("empty program name", with_image!("[exec]\ncommand = [\"\", \"x\"]\n"))
            .key("exec.command[0]").at(4, 12, "\"\"")
            .message("empty string"),
        bad("command with boot = true", with_image!("[exec]\nboot = true\ncommand = [\"/bin/sh\"]\n"))
            .key("exec.command").at(5, 11, "[\"/bin/sh\"]")
            .message("cannot be combined with `boot = true`"),
        bad("tar: source without a command", "[image]\nsource = \"tar:./root.tar\"\n")
            .key("exec.command").at(2, 10, "\"tar:./root.tar\"")
            .message("no default command")
            .help("set `command` in [exec]"),
        bad("env name holding `=`, after a non-ASCII name", with_image!("[exec]\nenv = { \"É\" = \"x\", \"A=B\" = \"y\" }\n"))
            .key("exec.env.A=B").at(4, 20, "\"A=B\"")
            .message("cannot be empty or hold `=`"),
        bad("env value holding NUL", with_image!("[exec]\nenv = { A = \"x\\u0000y\" }\n"))
            .key("exec.env.A").at(4, 13, "\"x\\u0000y\"")
            .message("NUL"),
        bad("command argument holding NUL", with_image!("[exec]\ncommand = [\"/bin/sh\", \"-c\", \"a\\u0000b\"]\n"))
            .key("exec.command[2]").at(4, 29, "\"a\\u0000b\"")
            .message("the argument holds a NUL byte"),
        bad("workdir holding NUL", with_image!("[exec]\nworkdir = \"/srv\\u0000x\"\n"))
            .key("exec.workdir").at(4, 11, "\"/srv\\u0000x\"")
            .message("the path holds a NUL byte"),
        bad("user with two colons", with_image!("[exec]\nuser = \"a:b:c\"\n"))
            .key("exec.user").at(4, 8, "\"a:b:c\"")
            .message("`a:b:c` is not a user"),
        bad("relative workdir", with_image!("[exec]\nworkdir = \"srv\"\n"))
            .key("exec.workdir").at(4, 11, "\"srv\"")
            .message("absolute path"),

        // ---- [storage] ---------------------------------------------------------------------
        bad("relative bind target", with_image!("[[storage.binds]]\nsource = \"/a\"\ntarget = \"srv\"\n"))
            .key("storage.binds[0].target").at(5, 10, "\"srv\"")
            .message("`srv` is relative")
            .help("write `/srv`"),
        bad("bind target with ..", with_image!("[[storage.binds]]\nsource = \"/a\"\ntarget = \"/srv/../etc\"\n"))
            .key("storage.binds[0].target").at(5, 10, "\"/srv/../etc\"")
            .message("contains `..`"),
        bad("bind target /", with_image!("[[storage.binds]]\nsource = \"/a\"\ntarget = \"/\"\n"))
            .key("storage.binds[0].target").at(5, 10, "\"/\"")
            .message("whole root"),
        bad("duplicate bind targets, after normalising",
            with_image!("[storage]\nbinds = [\n  { source = \"/a\", target = \"/data\" },\n  { source = \"/b\", target = \"/data/./\" },\n]\n"))
            .key("storage.binds[1].target").at(6, 29, "\"/data/./\"")
            .message("`/data` is already the target of another bind"),
        bad("bind source ~user/x", with_image!("[[storage.binds]]\nsource = \"~bob/x\"\ntarget = \"/x\"\n"))
            .key("storage.binds[0].source").at(4, 10, "\"~bob/x\"")
            .message("only `~/`"),
        bad("empty bind source", with_image!("[[storage.binds]]\nsource = \"\"\ntarget = \"/x\"\n"))
            .key("storage.binds[0].source").at(4, 10, "\"\"")
            .message("empty"),
        bad("bind without a target", with_image!("[[storage.binds]]\nsource = \"/a\"\ntarget = \"/a\"\n[[storage.binds]]\nsource = \"/b\"\n"))
            .key("storage.binds[1]").at(6, 1, "[[storage.binds]]")
            .message("missing key `target`"),

        // ---- [users] -----------------------------------------------------------------------
        bad("users.range = manual", with_image!("[users]\nrange = \"manual\"\n"))
            .key("users.range").at(4, 9, "\"manual\"")
            .message("`manual` is not a range")
            .help("\"auto\""),
        bad("users.range with size 0", with_image!("[users]\nrange = { base = 524288, size = 0 }\n"))
            .key("users.range.size").line(4).column(9)
            .message("size must be greater than 0")
            .unwanted("does not fit"),
        bad("users.range with a negative base", with_image!("[users]\nrange = { base = -1, size = 65536 }\n"))
            .key("users.range").line(4).column(9)
            .message("32-bit id space"),
        bad("users.range past the top of the id space", with_image!("[users]\nrange = { base = 4294967295, size = 2 }\n"))
            .key("users.range").line(4).column(9)
            .message("32-bit id space"),
        bad("users.range of the wrong form", with_image!("[users]\nrange = 5\n"))
            .key("users.range").at(4, 9, "5")
            .message("wrong form")
            .help("range = \"auto\""),
        bad("boot with fewer than 65536 ids", with_image!("[exec]\nboot = true\n[users]\nrange = { base = 524288, size = 1000 }\n"))
            .key("users.range.size").line(6).column(9)
            .message("at least 65536 ids"),
        bad("users.keep_id that is not a user name", with_image!("[users]\nkeep_id = \"al ice\"\n"))
            .key("users.keep_id").at(4, 11, "\"al ice\"")
            .message("`al ice` is not a user name")
            .help("keep_id = \"alice\""),
        bad("users.keep_id of the wrong form", with_image!("[users]\nkeep_id = 1000\n"))
            .key("users.keep_id").at(4, 11, "1000")
            .message("wrong form"),
        bad("users.home without keep_id", with_image!("[users]\nhome = \"host\"\n"))
            .key("users.home").at(4, 8, "\"host\"")
            .message("keep_id is not set")
            .help("keep_id = true"),
        bad("users.home with keep_id = false", with_image!("[users]\nkeep_id = false\nhome = \"machine\"\n"))
            .key("users.home").at(5, 8, "\"machine\"")
            .message("keep_id is not set"),
        bad("users.home empty", with_image!("[users]\nkeep_id = true\nhome = \"\"\n"))
            .key("users.home").at(5, 8, "\"\"")
            .message("the home is empty")
            .help("\"machine\", \"host\""),
        bad("users.home in another user's home", with_image!("[users]\nkeep_id = true\nhome = \"~bob/dev\"\n"))
            .key("users.home").at(5, 8, "\"~bob/dev\"")
            .message("only `~/`")
            .help("absolute path"),

        // ---- [network] ---------------------------------------------------------------------
        bad("unknown network mode", with_image!("[network]\nmode = \"privat\"\n"))
            .key("network.mode").at(4, 8, "\"privat\"")
            .message("unknown network mode `privat`")
            .help("did you mean `private`?"),
        bad("bridge network mode", with_image!("[network]\nmode = \"bridge\"\n"))
            .key("network.mode").at(4, 8, "\"bridge\"")
            .message("unknown network mode `bridge`")
            .help("a zone: `zone = \"NAME\"`"),
        bad("zone mode without a zone", with_image!("[network]\nmode = \"zone\"\n"))
            .key("network.mode").at(4, 8, "\"zone\"")
            .message("needs the zone's name"),
        bad("a zone with another mode", with_image!("[network]\nmode = \"host\"\nzone = \"app\"\n"))
            .key("network.zone").at(5, 8, "\"app\"")
            .message("not `host`"),
        bad("a zone name too long for vz-NAME", with_image!("[network]\nzone = \"much-too-long-zone\"\n"))
            .key("network.zone").line(4).column(8)
            .message("not a zone name"),
        bad("ports on a private network", with_image!("[network]\nports = [\"8080:80\"]\n"))
            .key("network.ports").at(4, 10, "\"8080:80\"")
            .message("needs a network of its own with a link to the host")
            .help("mode = \"veth\""),
        bad("a forward of the wrong form", with_image!("[network]\nmode = \"veth\"\nports = [\"80\"]\n"))
            .key("network.ports").at(5, 10, "\"80\"")
            .message("not a forward")
            .help("\"8080:80\""),
        bad("ranges of different lengths", with_image!("[network]\nmode = \"veth\"\nports = [\"9000-9009:80-81\"]\n"))
            .key("network.ports").line(5).column(10)
            .message("differ in length"),
        bad("two forwards of one host port", with_image!("[network]\nmode = \"veth\"\nports = [\"8080:80\", \"127.0.0.1:8080:81\"]\n"))
            .key("network.ports").line(5).column(21)
            .message("takes a host port that `8080:80/tcp` takes too"),
        bad("an address without a prefix", with_image!("[network]\nmode = \"veth\"\naddress = \"10.1.2.3\"\n"))
            .key("network.address").at(5, 11, "\"10.1.2.3\"")
            .message("no prefix length"),
        bad("a public address", with_image!("[network]\nzone = \"app\"\naddress = \"8.8.8.8/24\"\n"))
            .key("network.address").line(5).column(11)
            .message("not in a private range"),
        bad("the host's side of the subnet", with_image!("[network]\nzone = \"app\"\naddress = \"10.9.0.1/24\"\n"))
            .key("network.address").line(5).column(11)
            .message("the host's side of 10.9.0.0/24"),
        bad("an MTU out of range", with_image!("[network]\nmode = \"veth\"\nmtu = 70000\n"))
            .key("network.mtu").at(5, 7, "70000")
            .message("out of range"),

        // ---- [resources] -------------------------------------------------------------------
        bad("memory with an unknown unit", with_image!("[resources]\nmemory = \"12Q\"\n"))
            .key("resources.memory").at(4, 10, "\"12Q\"")
            .message("unknown unit `Q`")
            .help("\"512M\""),
        bad("memory of 0", with_image!("[resources]\nmemory = \"0\"\n"))
            .key("resources.memory").at(4, 10, "\"0\"")
            .message("below 1M"),
        bad("memory just below 1M", with_image!("[resources]\nmemory = \"1023K\"\n"))
            .key("resources.memory").at(4, 10, "\"1023K\"")
            .message("below 1M"),
        bad("memory as a negative number", with_image!("[resources]\nmemory = -5\n"))
            .key("resources.memory").at(4, 10, "-5")
            .message("negative"),
        bad("memory too large", with_image!("[resources]\nmemory = \"99999999999T\"\n"))
            .key("resources.memory").at(4, 10, "\"99999999999T\"")
            .message("too large"),
        bad("memory as a boolean", with_image!("[resources]\nmemory = true\n"))
            .key("resources.memory").at(4, 10, "true")
            .message("wrong form")
            .help("\"512M\""),
        bad("cpus = 0", with_image!("[resources]\ncpus = 0\n"))
            .key("resources.cpus").at(4, 8, "0")
            .message("greater than 0"),
        bad("cpus = nan", with_image!("[resources]\ncpus = nan\n"))
            .key("resources.cpus").at(4, 8, "nan")
            .message("greater than 0"),
        bad("cpus too small", with_image!("[resources]\ncpus = 0.0001\n"))
            .key("resources.cpus").at(4, 8, "0.0001")
            .message("at least 0.001"),
        bad("cpus above what Linux supports", with_image!("[resources]\ncpus = 5000\n"))
            .key("resources.cpus").at(4, 8, "5000")
            .message("4096"),

        // ---- [security] --------------------------------------------------------------------
        bad("unknown capability", with_image!("[security]\nadd_capabilities = [\"NET_ADMINN\"]\n"))
            .key("security.add_capabilities").at(4, 21, "\"NET_ADMINN\"")
            .message("unknown capability `NET_ADMINN`")
            .help("did you mean `CAP_NET_ADMIN`?"),
        bad("unknown capability to drop", with_image!("[security]\ndrop_capabilities = [\"all\", \"bogus\"]\n"))
            .key("security.drop_capabilities").at(4, 29, "\"bogus\"")
            .message("unknown capability `bogus`"),
        bad("capability both added and dropped", with_image!("[security]\nadd_capabilities = [\"SYS_TIME\", \"NET_ADMIN\"]\ndrop_capabilities = [\"cap_net_admin\"]\n"))
            .key("security.add_capabilities").at(4, 33, "\"NET_ADMIN\"")
            .message("`CAP_NET_ADMIN` is both added and dropped"),
        bad("all in add_capabilities", with_image!("[security]\nadd_capabilities = [\"all\"]\n"))
            .key("security.add_capabilities").at(4, 21, "\"all\"")
            .message("`all`")
            .unwanted("CAP_KILL"),

        // ---- [desktop] ---------------------------------------------------------------------
        bad("unknown key in [desktop]", with_image!("[desktop]\nwayand = true\n"))
            .key("desktop.wayand").at(4, 1, "wayand")
            .message("unknown key `wayand` in [desktop]")
            .help("did you mean `wayland`?"),
        bad("a passthrough as a string", with_image!("[desktop]\nx11 = \"yes\"\n"))
            .key("desktop.x11").at(4, 7, "\"yes\"")
            .message("expected a boolean"),
        bad("a variable a passthrough sets, set in [exec] env too", with_image!("[exec]\nenv = { DISPLAY = \":1\" }\n[desktop]\nx11 = true\n"))
            .key("exec.env.DISPLAY").at(4, 9, "DISPLAY")
            .message("`DISPLAY` is set by `desktop.x11`")
            .help("turn `desktop.x11` off"),

        // ---- the file's name ---------------------------------------------------------------
        bad("machine name with an underscore", with_image!(""))
            .path("/tmp/x/my_web.toml")
            .message("`my_web` contains `_`")
            .help("rename the file"),
        bad("machine name starting with a hyphen", with_image!(""))
            .path("machines/-web.toml")
            .message("starts or ends with `-`"),
        bad("file name not ending in .toml", with_image!(""))
            .path("machines/web.yaml")
            .message("ends in `.toml`"),
    ]
}

/// The text under the caret: `width` characters from `column`.
fn underlined(d: &Diagnostic) -> Option<String> {
    let loc = d.location.as_ref()?;
    Some(
        loc.line_text
            .chars()
            .skip(loc.column - 1)
            .take(loc.width)
            .collect(),
    )
}

/// Everything that is wrong with `row`'s first diagnostic, or why there is none.
fn check(row: &Row) -> Vec<String> {
    let path = Path::new(row.path);
    let all = match Definition::from_text(path, row.text) {
        Ok(_) => return vec!["the definition was accepted".to_owned()],
        Err(all) => all,
    };
    let Some(d) = all.first() else {
        return vec!["an error with no diagnostics".to_owned()];
    };
    let mut wrong = Vec::new();
    if d.key.as_deref() != row.key {
        wrong.push(format!("key {:?}, want {:?}", d.key, row.key));
    }
    match (&d.location, row.line) {
        (Some(loc), Some(line)) => {
            if loc.line != line {
                wrong.push(format!("line {}, want {line}", loc.line));
            }
            if let Some(column) = row.column
                && loc.column != column
            {
                wrong.push(format!("column {}, want {column}", loc.column));
            }
            let want_text = row.text.split('\n').nth(loc.line - 1).unwrap_or_default();
            if loc.line_text != want_text.trim_end_matches('\r') {
                wrong.push(format!("line text {:?}, want {want_text:?}", loc.line_text));
            }
        }
        (None, None) => {}
        (got, want) => wrong.push(format!(
            "location {:?}, want line {want:?}",
            got.as_ref().map(|l| (l.line, l.column))
        )),
    }
    if let Some(caret) = row.caret
        && underlined(d).as_deref() != Some(caret)
    {
        wrong.push(format!("underlined {:?}, want {caret:?}", underlined(d)));
    }
    if !d.message.contains(row.message) {
        wrong.push(format!("message {:?} lacks {:?}", d.message, row.message));
    }
    if let Some(help) = row.help
        && !d.help.iter().any(|h| h.contains(help))
    {
        wrong.push(format!("help {:?} lacks {help:?}", d.help));
    }
    let rendered = d.to_string();
    if let Some(unwanted) = row.unwanted
        && rendered.contains(unwanted)
    {
        wrong.push(format!("the diagnostic mentions {unwanted:?}"));
    }
    if !rendered.contains(row.path) {
        wrong.push("the rendered diagnostic does not name the file".to_owned());
    }
    if let Some(loc) = &d.location {
        let arrow = format!("--> {}:{}:{}", row.path, loc.line, loc.column);
        if !rendered.contains(&arrow) {
            wrong.push(format!("the rendered diagnostic lacks {arrow:?}"));
        }
    }
    if !wrong.is_empty() {
        wrong.push(format!("all diagnostics:\n{all}"));
    }
    wrong
}

/// Checks every row; panics listing each row that fails.
fn check_rows() {
    let rows = rows();
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let wrong = check(row);
            (!wrong.is_empty()).then(|| format!("--- {}\n{}", row.name, wrong.join("\n")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} rows failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_table_has_enough_distinct_rows() {
    let rows = rows();
    assert!(rows.len() >= 25, "only {} rows", rows.len());
    let mut names = std::collections::BTreeSet::new();
    let mut texts = std::collections::BTreeSet::new();
    for row in &rows {
        assert!(names.insert(row.name), "two rows named {:?}", row.name);
        assert!(
            texts.insert((row.path, row.text)),
            "row {:?} repeats another's input",
            row.name
        );
    }
}

#[test]
fn every_bad_definition_is_refused_with_a_located_explanation() {
    check_rows();
}

#[test]
fn every_problem_in_a_file_is_reported_in_file_order() {
    let text = with_image!(
        "[exec]\nworkdir = \"srv\"\n[network]\nmode = \"bridge\"\n[resources]\npids = 0\n"
    );
    let all = Definition::from_text(Path::new(PATH), text).unwrap_err();
    let found: Vec<(Option<&str>, usize)> = all
        .0
        .iter()
        .map(|d| (d.key.as_deref(), d.location.as_ref().map_or(0, |l| l.line)))
        .collect();
    assert_eq!(
        found,
        [
            (Some("exec.workdir"), 4),
            (Some("network.mode"), 6),
            (Some("resources.pids"), 8),
        ],
        "{all}"
    );
    let rendered = all.to_string();
    assert_eq!(rendered.matches("error: ").count(), 3, "{rendered}");
}

#[test]
fn a_bad_file_name_and_a_bad_value_are_both_reported() {
    let text = with_image!("[network]\nmode = \"bridge\"\n");
    let all = Definition::from_text(Path::new("/tmp/x/my_web.toml"), text).unwrap_err();
    assert_eq!(all.0.len(), 2, "{all}");
    assert!(all.0.iter().any(|d| d.location.is_none()), "{all}");
    assert!(
        all.0
            .iter()
            .any(|d| d.key.as_deref() == Some("network.mode")),
        "{all}"
    );
}

#[test]
fn the_rendered_diagnostic_underlines_the_value() {
    let all = Definition::from_text(Path::new(PATH), with_image!("[exec]\nboot = \"yes\"\n"))
        .unwrap_err();
    let text = all.to_string();
    assert!(text.starts_with("error: exec.boot: "), "{text}");
    assert!(text.contains(" --> machines/web.toml:4:8\n"), "{text}");
    assert!(
        text.contains("4 | boot = \"yes\"\n  |        ^^^^^"),
        "{text}"
    );
}
