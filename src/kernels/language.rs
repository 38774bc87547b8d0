//! File name, extension and `#!` line -> GitHub-linguist-style language name; the table is data.
//!
//! Every language is one [`LanguageDef`] row in [`LANGUAGES`]; the three lookup maps (file name,
//! extension, interpreter) are built from that table once, on first use, so adding a language never
//! means adding code. Names follow GitHub linguist's `languages.yml` so that the output can be joined
//! with GitHub's own statistics; the few entries linguist lacks ("Device Tree", "Kconfig") are
//! marked in the table.
//!
//! A path is resolved in a fixed order, and the first step that answers wins:
//!
//! 1. the exact file name (the last `/`-separated component), e.g. `Makefile`, `.bashrc`;
//! 2. the extension of that component (the text after its last `.`), first exactly and then
//!    ASCII-lowercased, so that `.C` can stay C++ while `README.MD` is still Markdown;
//! 3. only for components without any extension, the interpreter named by a `#!` first line.
//!
//! Ambiguous extensions (linguist settles `.h`, `.m`, `.pl`, `.v` and friends by looking at the
//! content) are given to a single language here, because this kernel runs once per changed file and
//! must stay cheap; each is claimed by exactly one row so the answer is always the same.

use std::collections::HashMap;
use std::sync::LazyLock;

/// One language: its linguist name and everything that identifies its files.
struct LanguageDef {
    /// The GitHub linguist name, returned as is by [`detect`].
    name: &'static str,
    /// Extensions without the leading dot; lowercase unless the case itself carries meaning (`C`).
    extensions: &'static [&'static str],
    /// Exact file names, matched case-sensitively like linguist does.
    filenames: &'static [&'static str],
    /// Program names of `#!` interpreters, without a version suffix unless the suffix matters.
    interpreters: &'static [&'static str],
}

/// The language table. It is kept as one row per language, alphabetical by name, so that a review
/// can compare it against linguist's `languages.yml` line by line; rustfmt would spread each row
/// over half a dozen lines, hence the skip.
#[rustfmt::skip]
static LANGUAGES: &[LanguageDef] = &[
    LanguageDef { name: "Ada", extensions: &["adb", "ada", "ads"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "AppleScript", extensions: &["applescript", "scpt"], filenames: &[], interpreters: &["osascript"] },
    LanguageDef { name: "AsciiDoc", extensions: &["asciidoc", "adoc"], filenames: &[], interpreters: &[] },
    // `.S` (assembly run through the C preprocessor) reaches this row through the lowercase retry.
    LanguageDef { name: "Assembly", extensions: &["asm", "nasm", "s"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Astro", extensions: &["astro"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Awk",
        extensions: &["awk", "auk", "gawk", "mawk", "nawk"],
        filenames: &[],
        interpreters: &["awk", "gawk", "mawk", "nawk"],
    },
    LanguageDef { name: "Batchfile", extensions: &["bat", "cmd"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "BibTeX", extensions: &["bib", "bibtex"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Bicep", extensions: &["bicep"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "BitBake", extensions: &["bb", "bbappend", "bbclass"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Bison", extensions: &["bison"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Browserslist", extensions: &[], filenames: &[".browserslistrc", "browserslist"], interpreters: &[] },
    LanguageDef { name: "C", extensions: &["c", "h", "cats", "idc"], filenames: &[], interpreters: &["tcc"] },
    LanguageDef { name: "C#", extensions: &["cs", "csx"], filenames: &[], interpreters: &[] },
    // `.C` and `.H` are the traditional C++ spellings (GCC treats them so); the lowercase forms are C.
    LanguageDef {
        name: "C++",
        extensions: &[
            "cpp", "c++", "cc", "cp", "cppm", "cxx", "h++", "hh", "hpp", "hxx", "inl", "ipp", "ixx",
            "tcc", "tpp", "txx", "C", "H",
        ],
        filenames: &[],
        interpreters: &[],
    },
    LanguageDef { name: "CMake", extensions: &["cmake"], filenames: &["CMakeLists.txt"], interpreters: &[] },
    LanguageDef { name: "COBOL", extensions: &["cob", "cbl", "ccp", "cobol", "cpy"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "CODEOWNERS", extensions: &[], filenames: &["CODEOWNERS"], interpreters: &[] },
    LanguageDef { name: "CSS", extensions: &["css"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "CSV", extensions: &["csv"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "CUE", extensions: &["cue"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Cabal Config", extensions: &["cabal"], filenames: &["cabal.config", "cabal.project"], interpreters: &[] },
    LanguageDef { name: "Caddyfile", extensions: &["caddyfile"], filenames: &["Caddyfile"], interpreters: &[] },
    LanguageDef { name: "Cap'n Proto", extensions: &["capnp"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Checksums",
        extensions: &["crc32", "md5", "sha1", "sha256", "sha512"],
        filenames: &["MD5SUMS", "SHA1SUMS", "SHA256SUMS", "SHA512SUMS"],
        interpreters: &[],
    },
    LanguageDef {
        name: "Clojure",
        extensions: &["clj", "boot", "cljc", "cljs", "cljx"],
        filenames: &["riemann.config"],
        interpreters: &["bb"],
    },
    LanguageDef {
        name: "CoffeeScript",
        extensions: &["coffee", "cjsx", "iced"],
        filenames: &["Cakefile"],
        interpreters: &["coffee"],
    },
    LanguageDef { name: "ColdFusion", extensions: &["cfm", "cfml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "ColdFusion CFC", extensions: &["cfc"], filenames: &[], interpreters: &[] },
    // `.cl` is left to OpenCL: compute kernels are far more common in this project's inputs.
    LanguageDef {
        name: "Common Lisp",
        extensions: &["lisp", "asd", "lsp"],
        filenames: &[],
        interpreters: &["lisp", "sbcl", "ccl", "clisp", "ecl"],
    },
    LanguageDef { name: "Crystal", extensions: &["cr"], filenames: &[], interpreters: &["crystal"] },
    LanguageDef { name: "Cuda", extensions: &["cu", "cuh"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Cython", extensions: &["pyx", "pxd", "pxi"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "D", extensions: &["d", "di"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Dart", extensions: &["dart"], filenames: &[], interpreters: &["dart"] },
    // Not a linguist language; kept because kernel and firmware trees are full of these files.
    LanguageDef { name: "Device Tree", extensions: &["dts", "dtsi", "dtso"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Dhall", extensions: &["dhall"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Diff", extensions: &["diff", "patch"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Dockerfile",
        extensions: &["dockerfile", "containerfile"],
        filenames: &["Containerfile", "Dockerfile"],
        interpreters: &[],
    },
    LanguageDef {
        name: "Dotenv",
        extensions: &["env"],
        filenames: &[
            ".env", ".env.ci", ".env.dev", ".env.development", ".env.development.local", ".env.example",
            ".env.local", ".env.prod", ".env.production", ".env.sample", ".env.staging", ".env.test",
            ".env.testing",
        ],
        interpreters: &[],
    },
    LanguageDef { name: "EJS", extensions: &["ejs", "ect", "jst"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Earthly", extensions: &[], filenames: &["Earthfile"], interpreters: &[] },
    LanguageDef { name: "EditorConfig", extensions: &["editorconfig"], filenames: &[".editorconfig"], interpreters: &[] },
    LanguageDef { name: "Elixir", extensions: &["ex", "exs"], filenames: &["mix.lock"], interpreters: &["elixir"] },
    LanguageDef { name: "Elm", extensions: &["elm"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Emacs Lisp",
        extensions: &["el"],
        filenames: &[".abbrev_defs", ".emacs", ".gnus", ".spacemacs", ".viper", "Cask", "Project.ede", "_emacs", "abbrev_defs"],
        interpreters: &[],
    },
    LanguageDef {
        name: "Erlang",
        extensions: &["erl", "escript", "hrl", "xrl", "yrl"],
        filenames: &["Emakefile", "rebar.config", "rebar.config.lock", "rebar.lock"],
        interpreters: &["escript"],
    },
    LanguageDef { name: "F#", extensions: &["fs", "fsi", "fsx"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Fennel", extensions: &["fnl"], filenames: &[], interpreters: &["fennel"] },
    // linguist splits fixed-form from free-form Fortran by extension; both names are kept.
    LanguageDef { name: "Fortran", extensions: &["f", "f77", "for", "fpp"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Fortran Free Form", extensions: &["f90", "f03", "f08", "f95"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "GDScript", extensions: &["gd"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "GLSL",
        extensions: &["glsl", "frag", "fsh", "geom", "tesc", "tese", "vert", "vsh"],
        filenames: &[],
        interpreters: &[],
    },
    LanguageDef { name: "GN", extensions: &["gn", "gni"], filenames: &[".gn"], interpreters: &["gn"] },
    LanguageDef { name: "Gemfile.lock", extensions: &[], filenames: &["Gemfile.lock"], interpreters: &[] },
    LanguageDef { name: "Gettext Catalog", extensions: &["po", "pot"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Gherkin", extensions: &["feature", "story"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Git Attributes", extensions: &[], filenames: &[".gitattributes"], interpreters: &[] },
    LanguageDef { name: "Git Config", extensions: &["gitconfig"], filenames: &[".gitconfig", ".gitmodules"], interpreters: &[] },
    LanguageDef { name: "Git Revision List", extensions: &[], filenames: &[".git-blame-ignore-revs"], interpreters: &[] },
    LanguageDef { name: "Gleam", extensions: &["gleam"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Gnuplot", extensions: &["gp", "gnu", "gnuplot", "plot"], filenames: &[], interpreters: &["gnuplot"] },
    LanguageDef { name: "Go", extensions: &["go"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Go Checksums", extensions: &[], filenames: &["go.sum", "go.work.sum"], interpreters: &[] },
    LanguageDef { name: "Go Module", extensions: &[], filenames: &["go.mod"], interpreters: &[] },
    LanguageDef { name: "Go Workspace", extensions: &[], filenames: &["go.work"], interpreters: &[] },
    LanguageDef { name: "Gradle", extensions: &["gradle"], filenames: &[], interpreters: &[] },
    // linguist matches the two-part extension `.gradle.kts`; only the last part is seen here, so the
    // conventional file names stand in for it and plain `.kts` stays Kotlin.
    LanguageDef {
        name: "Gradle Kotlin DSL",
        extensions: &[],
        filenames: &["build.gradle.kts", "settings.gradle.kts"],
        interpreters: &[],
    },
    LanguageDef { name: "GraphQL", extensions: &["graphql", "gql", "graphqls"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Graphviz (DOT)", extensions: &["dot", "gv"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Groovy",
        extensions: &["groovy", "grt", "gtpl", "gvy"],
        filenames: &["Jenkinsfile"],
        interpreters: &["groovy"],
    },
    LanguageDef { name: "HCL", extensions: &["hcl", "nomad", "tf", "tfvars"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "HLSL", extensions: &["hlsl", "cginc", "fxh", "hlsli"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "HTML", extensions: &["html", "hta", "htm", "xht", "xhtml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "HTML+ERB", extensions: &["erb", "rhtml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "HTML+PHP", extensions: &["phtml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "HTML+Razor", extensions: &["cshtml", "razor"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Hack", extensions: &["hack", "hhi"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Haml", extensions: &["haml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Handlebars", extensions: &["handlebars", "hbs"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Haskell",
        extensions: &["hs", "hs-boot", "hsc"],
        filenames: &[],
        interpreters: &["runghc", "runhaskell", "runhugs"],
    },
    LanguageDef { name: "Haxe", extensions: &["hx", "hxsl"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "INI",
        extensions: &["ini", "cfg", "cnf", "prefs"],
        filenames: &[".buckconfig", ".coveragerc", ".flake8", ".pylintrc", "pylintrc", "vlcrc"],
        interpreters: &[],
    },
    LanguageDef {
        name: "Ignore List",
        extensions: &["gitignore"],
        filenames: &[
            ".atomignore", ".babelignore", ".bzrignore", ".coffeelintignore", ".cvsignore", ".dockerignore",
            ".eleventyignore", ".eslintignore", ".gitignore", ".ignore", ".markdownlintignore",
            ".nodemonignore", ".npmignore", ".prettierignore", ".stylelintignore", ".vercelignore",
            ".vscodeignore", "gitignore-global", "gitignore_global",
        ],
        interpreters: &[],
    },
    LanguageDef {
        name: "JSON",
        extensions: &[
            "json", "avsc", "geojson", "gltf", "har", "jsonl", "mcmeta", "sarif", "tfstate", "topojson",
            "webapp", "webmanifest",
        ],
        filenames: &[
            ".all-contributorsrc", ".arcconfig", ".c8rc", ".htmlhintrc", ".nycrc", ".tern-config",
            ".tern-project", ".watchmanconfig", "MODULE.bazel.lock", "Package.resolved", "Pipfile.lock",
            "bun.lock", "composer.lock", "deno.lock", "flake.lock",
        ],
        interpreters: &[],
    },
    LanguageDef {
        name: "JSON with Comments",
        extensions: &["jsonc", "code-snippets", "code-workspace", "sublime-project", "sublime-settings"],
        filenames: &[
            ".babelrc", ".devcontainer.json", ".eslintrc.json", ".jscsrc", ".jshintrc", ".jslintrc",
            ".swcrc", "api-extractor.json", "devcontainer.json", "jsconfig.json",
            "language-configuration.json", "tsconfig.json", "tslint.json",
        ],
        interpreters: &[],
    },
    LanguageDef { name: "JSON5", extensions: &["json5"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Java", extensions: &["java", "jav", "jsh"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Java Properties", extensions: &["properties"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Java Server Pages", extensions: &["jsp"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "JavaScript",
        extensions: &["js", "cjs", "es6", "jsm", "jsx", "mjs"],
        filenames: &["Jakefile"],
        interpreters: &["chakra", "d8", "gjs", "js", "node", "nodejs", "qjs", "rhino", "v8", "v8-shell"],
    },
    LanguageDef { name: "Jinja", extensions: &["jinja", "j2", "jinja2"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Jsonnet", extensions: &["jsonnet", "libsonnet"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Julia", extensions: &["jl"], filenames: &[], interpreters: &["julia"] },
    LanguageDef { name: "Jupyter Notebook", extensions: &["ipynb"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Just",
        extensions: &["just"],
        filenames: &[".JUSTFILE", ".Justfile", ".justfile", "JUSTFILE", "Justfile", "justfile"],
        interpreters: &[],
    },
    // Not a linguist language; the Linux kernel's configuration files have no extension to go by.
    LanguageDef { name: "Kconfig", extensions: &[], filenames: &["Kconfig", "Kconfig.debug"], interpreters: &[] },
    LanguageDef { name: "Kotlin", extensions: &["kt", "ktm", "kts"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "LLVM", extensions: &["ll"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Less", extensions: &["less"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Lex", extensions: &["l", "lex"], filenames: &["Lexer.x", "lexer.x"], interpreters: &[] },
    LanguageDef { name: "Linker Script", extensions: &["ld", "lds"], filenames: &["ld.script"], interpreters: &[] },
    LanguageDef { name: "Liquid", extensions: &["liquid"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Literate Haskell", extensions: &["lhs"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Lua",
        extensions: &["lua", "nse", "rockspec", "wlua"],
        filenames: &[".luacheckrc"],
        interpreters: &["lua", "luajit"],
    },
    LanguageDef { name: "Luau", extensions: &["luau"], filenames: &[], interpreters: &["luau"] },
    LanguageDef { name: "M4", extensions: &["m4"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "M4Sugar", extensions: &[], filenames: &["configure.ac"], interpreters: &[] },
    LanguageDef { name: "MATLAB", extensions: &["matlab"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "MDX", extensions: &["mdx"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "MLIR", extensions: &["mlir"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Makefile",
        extensions: &["mak", "make", "mk", "mkfile"],
        filenames: &[
            "BSDmakefile", "GNUmakefile", "Kbuild", "Makefile", "Makefile.am", "Makefile.boot",
            "Makefile.frag", "Makefile.in", "Makefile.inc", "Makefile.wat", "makefile", "makefile.sco",
            "mkfile",
        ],
        interpreters: &["make"],
    },
    LanguageDef {
        name: "Markdown",
        extensions: &["md", "livemd", "markdown", "mdown", "mdwn", "mkd", "mkdn", "mkdown", "ronn", "workbook"],
        filenames: &["contents.lr"],
        interpreters: &[],
    },
    LanguageDef { name: "Mathematica", extensions: &["mathematica", "wl", "wlt"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Mermaid", extensions: &["mmd", "mermaid"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Meson",
        extensions: &[],
        filenames: &["meson.build", "meson.options", "meson_options.txt"],
        interpreters: &[],
    },
    LanguageDef { name: "Metal", extensions: &["metal"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Mojo", extensions: &["mojo"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Mustache", extensions: &["mustache"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "NPM Config", extensions: &[], filenames: &[".npmrc"], interpreters: &[] },
    LanguageDef { name: "NSIS", extensions: &["nsi", "nsh"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Nextflow", extensions: &["nf"], filenames: &["nextflow.config"], interpreters: &["nextflow"] },
    LanguageDef { name: "Nginx", extensions: &["nginx", "nginxconf"], filenames: &["nginx.conf"], interpreters: &[] },
    LanguageDef { name: "Nim", extensions: &["nim", "nimble", "nimrod", "nims"], filenames: &["nim.cfg"], interpreters: &[] },
    LanguageDef { name: "Ninja", extensions: &["ninja"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Nix", extensions: &["nix"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Nushell", extensions: &["nu"], filenames: &[], interpreters: &["nu"] },
    LanguageDef {
        name: "OCaml",
        extensions: &["ml", "eliom", "eliomi", "ml4", "mli", "mll", "mly"],
        filenames: &[],
        interpreters: &["ocaml", "ocamlrun", "ocamlscript"],
    },
    LanguageDef { name: "Objective-C", extensions: &["m"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Objective-C++", extensions: &["mm"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Odin", extensions: &["odin"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "OpenCL", extensions: &["cl", "opencl"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Option List",
        extensions: &[],
        filenames: &[".ackrc", ".rspec", ".yardopts", "ackrc", "mocha.opts"],
        interpreters: &[],
    },
    LanguageDef { name: "Org", extensions: &["org"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "PHP",
        extensions: &["php", "ctp", "php3", "php4", "php5", "phps", "phpt"],
        filenames: &[".php_cs", ".php_cs.dist", "Phakefile"],
        interpreters: &["php"],
    },
    LanguageDef { name: "PLSQL", extensions: &["pls", "pck", "pkb", "pks", "plsql"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "PLpgSQL", extensions: &["pgsql"], filenames: &[], interpreters: &[] },
    // `.pp` goes to Puppet, which is by far the more common owner of it in repositories.
    LanguageDef {
        name: "Pascal",
        extensions: &["pas", "dfm", "dpr", "lpr", "pascal"],
        filenames: &[],
        interpreters: &["instantfpc"],
    },
    LanguageDef {
        name: "Perl",
        extensions: &["pl", "perl", "ph", "plx", "pm", "psgi", "t"],
        filenames: &[".latexmkrc", "Makefile.PL", "Rexfile", "cpanfile", "latexmkrc"],
        interpreters: &["cperl", "perl"],
    },
    // Binary Python pickles, not the Pkl configuration language, are what `.pkl` usually holds.
    LanguageDef { name: "Pickle", extensions: &["pkl"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Pip Requirements",
        extensions: &[],
        filenames: &["requirements-dev.txt", "requirements.txt"],
        interpreters: &[],
    },
    LanguageDef { name: "PlantUML", extensions: &["puml", "iuml", "plantuml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Pod", extensions: &["pod"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "PostCSS", extensions: &["pcss", "postcss"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "PostScript", extensions: &["ps", "eps", "epsi"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "PowerShell", extensions: &["ps1", "psd1", "psm1"], filenames: &[], interpreters: &["pwsh"] },
    LanguageDef { name: "Prisma", extensions: &["prisma"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Procfile", extensions: &[], filenames: &["Procfile"], interpreters: &[] },
    LanguageDef { name: "Protocol Buffer", extensions: &["proto"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Protocol Buffer Text Format", extensions: &["textproto", "pbtxt"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Public Key", extensions: &["pub"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Pug", extensions: &["pug", "jade"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Puppet", extensions: &["pp"], filenames: &["Modulefile"], interpreters: &[] },
    LanguageDef { name: "PureScript", extensions: &["purs"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Python",
        extensions: &[
            "py", "gyp", "gypi", "lmi", "py3", "pyde", "pyi", "pyp", "pyt", "pyw", "tac", "wsgi", "xpy",
        ],
        filenames: &[".gclient", "DEPS", "SConscript", "SConstruct", "wscript"],
        interpreters: &["python", "py", "pypy", "uv"],
    },
    LanguageDef { name: "R", extensions: &["r", "rd", "rsx"], filenames: &[".Rprofile"], interpreters: &["Rscript"] },
    LanguageDef { name: "RMarkdown", extensions: &["qmd", "rmd"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Racket", extensions: &["rkt", "rktd", "rktl", "scrbl"], filenames: &[], interpreters: &["racket"] },
    // `perl6` is looked up before its version suffix is stripped, so it lands here and not on Perl.
    LanguageDef {
        name: "Raku",
        extensions: &["raku", "6pl", "6pm", "nqp", "p6", "p6l", "p6m", "pl6", "pm6", "rakumod"],
        filenames: &[],
        interpreters: &["perl6", "raku", "rakudo"],
    },
    LanguageDef { name: "ReScript", extensions: &["res", "resi"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Regular Expression", extensions: &["regexp", "regex"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Roff",
        extensions: &[
            "roff", "1", "1in", "1m", "1x", "2", "3", "3in", "3m", "3p", "3pm", "3qt", "3x", "4", "5", "6",
            "7", "8", "9", "man", "mdoc", "me", "tmac",
        ],
        filenames: &["eqnrc", "mmn", "mmt", "troffrc", "troffrc-end"],
        interpreters: &[],
    },
    LanguageDef {
        name: "Ruby",
        extensions: &[
            "rb", "builder", "eye", "gemspec", "god", "jbuilder", "mspec", "pluginspec", "podspec", "prawn",
            "rabl", "rake", "rbi", "rbuild", "rbw", "rbx", "ru", "ruby", "thor", "watchr",
        ],
        filenames: &[
            ".irbrc", ".pryrc", ".simplecov", "Appraisals", "Berksfile", "Brewfile", "Buildfile", "Capfile",
            "Dangerfile", "Deliverfile", "Fastfile", "Gemfile", "Guardfile", "Jarfile", "Mavenfile",
            "Podfile", "Puppetfile", "Rakefile", "Snapfile", "Steepfile", "Thorfile", "Vagrantfile",
            "buildfile",
        ],
        interpreters: &["ruby", "macruby", "rake", "jruby", "rbx"],
    },
    LanguageDef { name: "Rust", extensions: &["rs"], filenames: &[], interpreters: &["rust-script"] },
    LanguageDef { name: "SCSS", extensions: &["scss"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "SELinux Policy",
        extensions: &["te"],
        filenames: &["file_contexts", "genfs_contexts", "initial_sids", "port_contexts", "security_classes"],
        interpreters: &[],
    },
    LanguageDef { name: "SQL", extensions: &["sql", "cql", "ddl", "mysql", "udf", "viw"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "SSH Config",
        extensions: &[],
        filenames: &["ssh-config", "ssh_config", "sshconfig", "sshconfig.snip", "sshd-config", "sshd_config"],
        interpreters: &[],
    },
    LanguageDef { name: "SVG", extensions: &["svg"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Sass", extensions: &["sass"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Scala", extensions: &["scala", "kojo", "sbt", "sc"], filenames: &[], interpreters: &["scala"] },
    LanguageDef {
        name: "Scheme",
        extensions: &["scm", "sld", "sps", "ss"],
        filenames: &[],
        interpreters: &["scheme", "guile", "bigloo", "chicken", "csi", "gosh", "r6rs"],
    },
    LanguageDef {
        name: "Shell",
        extensions: &["sh", "bash", "bats", "command", "ksh", "tmux", "tool", "zsh", "zsh-theme"],
        filenames: &[
            ".bash_aliases", ".bash_functions", ".bash_logout", ".bash_profile", ".bashrc", ".cshrc",
            ".envrc", ".flaskenv", ".kshrc", ".login", ".profile", ".tmux.conf", ".zlogin", ".zlogout",
            ".zprofile", ".zshenv", ".zshrc", "PKGBUILD", "bash_aliases", "bash_logout", "bash_profile",
            "bashrc", "cshrc", "gradlew", "kshrc", "tmux.conf", "zlogin", "zlogout", "zprofile", "zshenv",
            "zshrc",
        ],
        interpreters: &["ash", "bash", "dash", "ksh", "mksh", "pdksh", "rc", "sh", "zsh"],
    },
    LanguageDef { name: "ShellSession", extensions: &["sh-session"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Slim", extensions: &["slim"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Smali", extensions: &["smali"], filenames: &[], interpreters: &[] },
    // linguist's name for Coccinelle's semantic patch language.
    LanguageDef { name: "SmPL", extensions: &["cocci"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Snakemake", extensions: &["smk", "snakefile"], filenames: &["Snakefile"], interpreters: &[] },
    LanguageDef { name: "Solidity", extensions: &["sol"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Soong", extensions: &[], filenames: &["Android.bp"], interpreters: &[] },
    LanguageDef { name: "Standard ML", extensions: &["sml", "fun", "sig"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Starlark",
        extensions: &["bzl", "star"],
        filenames: &[
            "BUCK", "BUILD", "BUILD.bazel", "MODULE.bazel", "Tiltfile", "WORKSPACE", "WORKSPACE.bazel",
            "WORKSPACE.bzlmod",
        ],
        interpreters: &[],
    },
    LanguageDef { name: "Stata", extensions: &["do", "ado", "doh", "ihlp", "mata", "matah", "sthlp"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Stylus", extensions: &["styl"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Svelte", extensions: &["svelte"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Swift", extensions: &["swift"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "SystemVerilog", extensions: &["sv", "svh", "vh"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "TOML",
        extensions: &["toml"],
        filenames: &["Cargo.lock", "Cargo.toml.orig", "Gopkg.lock", "Pipfile", "pdm.lock", "poetry.lock", "uv.lock"],
        interpreters: &[],
    },
    LanguageDef { name: "TSV", extensions: &["tsv"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "TSX", extensions: &["tsx"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Tcl",
        extensions: &["tcl", "adp", "sdc", "tm", "xdc"],
        filenames: &[],
        interpreters: &["tclsh", "wish"],
    },
    LanguageDef { name: "Tcsh", extensions: &["tcsh", "csh"], filenames: &[], interpreters: &["tcsh", "csh"] },
    LanguageDef {
        name: "TeX",
        extensions: &["tex", "bbx", "cbx", "cls", "dtx", "ins", "lbx", "ltx", "mkii", "mkiv", "mkvi", "sty"],
        filenames: &[],
        interpreters: &[],
    },
    LanguageDef { name: "Terraform Template", extensions: &["tftpl"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Texinfo", extensions: &["texinfo", "texi", "txi"], filenames: &[], interpreters: &["makeinfo"] },
    LanguageDef {
        name: "Text",
        extensions: &["txt"],
        filenames: &["CITATION", "CITATIONS", "COPYING", "FONTLOG", "INSTALL", "LICENSE", "NEWS", "read.me", "readme.1st"],
        interpreters: &[],
    },
    LanguageDef { name: "Textile", extensions: &["textile"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Thrift", extensions: &["thrift"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Twig", extensions: &["twig"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "TypeScript",
        extensions: &["ts", "cts", "mts"],
        filenames: &[],
        interpreters: &["bun", "deno", "ts-node", "tsx"],
    },
    LanguageDef { name: "Typst", extensions: &["typ"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Unity3D Asset",
        extensions: &["anim", "asset", "mat", "meta", "prefab", "unity"],
        filenames: &[],
        interpreters: &[],
    },
    LanguageDef { name: "VBScript", extensions: &["vbs"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "VHDL",
        extensions: &["vhdl", "vhd", "vhf", "vhi", "vho", "vhs", "vht", "vhw"],
        filenames: &[],
        interpreters: &[],
    },
    LanguageDef { name: "Vala", extensions: &["vala", "vapi"], filenames: &[], interpreters: &[] },
    // `.v` goes to Verilog rather than Coq/Rocq or V, matching the hardware trees this tool meets most.
    LanguageDef { name: "Verilog", extensions: &["v", "veo"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "Vim Script",
        extensions: &["vim", "vmb"],
        filenames: &[".exrc", ".gvimrc", ".nvimrc", ".vimrc", "_vimrc", "gvimrc", "nvimrc", "vimrc"],
        interpreters: &[],
    },
    LanguageDef { name: "Visual Basic .NET", extensions: &["vb", "vbhtml"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Vue", extensions: &["vue"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "WGSL", extensions: &["wgsl"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "WebAssembly", extensions: &["wast", "wat"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Wikitext", extensions: &["mediawiki", "wiki", "wikitext"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Windows Registry Entries", extensions: &["reg"], filenames: &[], interpreters: &[] },
    LanguageDef {
        name: "XML",
        extensions: &[
            "xml", "adml", "admx", "ant", "axaml", "builds", "ccproj", "clixml", "cproject", "csproj",
            "depproj", "dita", "ditamap", "ditaval", "filters", "fsproj", "fxml", "glade", "gpx", "iml",
            "jelly", "kml", "launch", "mjml", "natvis", "ndproj", "nproj", "nuspec", "pkgproj", "proj",
            "props", "ps1xml", "qhelp", "rdf", "resx", "rss", "scxml", "sfproj", "shproj", "slnx",
            "storyboard", "targets", "ui", "urdf", "vbproj", "vcxproj", "vsixmanifest", "vssettings",
            "vstemplate", "vxml", "wixproj", "wsdl", "wsf", "wxi", "wxl", "wxs", "x3d", "xacro", "xaml",
            "xib", "xlf", "xliff", "xmi", "xmp", "xproj", "xsd", "xspec", "xul", "zcml",
        ],
        filenames: &[
            ".classpath", ".cproject", ".project", "App.config", "NuGet.config", "Settings.StyleCop",
            "Web.Debug.config", "Web.Release.config", "Web.config", "packages.config",
        ],
        interpreters: &[],
    },
    // Stored lowercase so that the lowercase retry also finds the usual camel-case spellings
    // (`.tmLanguage`, `.tmTheme`).
    LanguageDef {
        name: "XML Property List",
        extensions: &["plist", "sttheme", "tmcommand", "tmlanguage", "tmpreferences", "tmsnippet", "tmtheme"],
        filenames: &[],
        interpreters: &[],
    },
    LanguageDef { name: "XSLT", extensions: &["xslt", "xsl"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Xmake", extensions: &[], filenames: &["xmake.lua"], interpreters: &[] },
    LanguageDef {
        name: "YAML",
        extensions: &["yml", "mir", "reek", "rviz", "sublime-syntax", "yaml", "yaml-tmlanguage"],
        filenames: &[
            ".clang-format", ".clang-tidy", ".clangd", ".gemrc", "CITATION.cff", "glide.lock", "pixi.lock",
            "yarn.lock",
        ],
        interpreters: &[],
    },
    LanguageDef { name: "Yacc", extensions: &["y", "yacc", "yy"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "Zig", extensions: &["zig", "zon"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "crontab", extensions: &[], filenames: &["crontab"], interpreters: &[] },
    LanguageDef { name: "desktop", extensions: &["desktop", "service"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "edn", extensions: &["edn"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "fish", extensions: &["fish"], filenames: &[], interpreters: &["fish"] },
    LanguageDef {
        name: "jq",
        extensions: &["jq"],
        filenames: &[],
        interpreters: &["gojq", "jaq", "jq", "jqjq", "jqq", "query-json"],
    },
    LanguageDef { name: "reStructuredText", extensions: &["rst", "rest"], filenames: &[], interpreters: &[] },
    LanguageDef { name: "robots.txt", extensions: &[], filenames: &["robots.txt"], interpreters: &[] },
    LanguageDef { name: "sed", extensions: &["sed"], filenames: &[], interpreters: &["gsed", "minised", "sed", "ssed"] },
];

/// Bytes of content searched for the `#!` line. A shebang is only honoured by the kernel within its
/// first line, and real ones are short; the cap keeps a huge first line from costing a full scan.
const SHEBANG_WINDOW: usize = 256;

/// Longest extension the lowercase retry will copy to the stack. Longer ones cannot be in the table
/// (a test checks this), so they are rejected without allocating.
const MAX_EXTENSION_LEN: usize = 32;

/// Options of `env` that take the following word as their argument; that word is not the program.
const ENV_OPTIONS_WITH_ARGUMENT: &[&[u8]] = &[
    b"-u", b"--unset", b"-C", b"--chdir", b"-P", b"-a", b"--argv0",
];

/// The lookup maps, each from a key to the name of the language that claims it.
struct Index {
    /// Language names to themselves, for [`intern`].
    names: HashMap<&'static str, &'static str>,
    filenames: HashMap<&'static str, &'static str>,
    extensions: HashMap<&'static str, &'static str>,
    interpreters: HashMap<&'static str, &'static str>,
}

/// Built on first use, so that callers that never detect a language pay nothing, and built once,
/// so that per-file detection is three hash lookups at most.
static INDEX: LazyLock<Index> = LazyLock::new(|| Index {
    names: LANGUAGES.iter().map(|def| (def.name, def.name)).collect(),
    filenames: index_by(|def| def.filenames),
    extensions: index_by(|def| def.extensions),
    interpreters: index_by(|def| def.interpreters),
});

/// Picks one kind of key (extensions, file names or interpreters) out of a table row.
type KeySelector = fn(&LanguageDef) -> &'static [&'static str];

/// Maps every key selected from the table to its language. The table's tests guarantee that no key
/// is claimed twice; should one slip in, the earlier row wins so the result stays deterministic.
fn index_by(keys: KeySelector) -> HashMap<&'static str, &'static str> {
    let mut map = HashMap::new();
    for def in LANGUAGES {
        for &key in keys(def) {
            map.entry(key).or_insert(def.name);
        }
    }
    map
}

/// The language of a file from its path (relative, '/'-separated bytes, possibly not UTF-8) and, for
/// files without a recognised name or extension, the first line of its content (`#!` interpreter).
/// Returns a GitHub linguist name such as "Rust", "Python", "C", "C++", "Markdown", "Makefile",
/// "Shell", "JSON"; None when unknown.
///
/// The file name is tried first, then the extension (exactly, then ASCII-lowercased), and only a
/// name without any extension falls back to the `#!` line, because an extension is a deliberate
/// statement while a shebang in, say, a `.txt` file is just text. Only the first line of `content`,
/// and at most its first 256 bytes, is ever read. Bytes that are not UTF-8 never match and never
/// panic.
pub fn detect(path: &[u8], content: &[u8]) -> Option<&'static str> {
    let name = basename(path);
    if name.is_empty() {
        return None;
    }
    let index = &*INDEX;
    if let Some(language) = lookup(&index.filenames, name) {
        return Some(language);
    }
    match extension(name) {
        Some(ext) => lookup_extension(&index.extensions, ext),
        None => lookup_interpreter(&index.interpreters, shebang_program(content)?),
    }
}

/// Number of languages in the table (for tests and docs).
pub fn language_count() -> usize {
    LANGUAGES.len()
}

/// The table's own static string for a language name that [`detect`] can return; None for a name
/// the table does not hold. Names cross process boundaries as text, and interning them again on
/// arrival lets every worker hold, compare and hash the very same `&'static str`.
pub fn intern(name: &str) -> Option<&'static str> {
    INDEX.names.get(name).copied()
}

/// The last `/`-separated component; empty when the path ends in `/`.
fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => &path[slash + 1..],
        None => path,
    }
}

/// The text after the last `.` of a file name. A dot at position 0 only marks a hidden file
/// (`.bashrc`), so such a name has no extension and is left to the file-name table.
fn extension(name: &[u8]) -> Option<&[u8]> {
    match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => None,
        Some(dot) => Some(&name[dot + 1..]),
    }
}

/// Looks a byte key up in a map with string keys; keys that are not UTF-8 cannot be in the table.
fn lookup(map: &HashMap<&'static str, &'static str>, key: &[u8]) -> Option<&'static str> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|key| map.get(key).copied())
}

/// Exact match first, so that case-significant rows (`.C` is C++, `.c` is C) keep their meaning;
/// then the ASCII-lowercase form, so that `README.MD` or `SETUP.PY` still resolve.
fn lookup_extension(map: &HashMap<&'static str, &'static str>, ext: &[u8]) -> Option<&'static str> {
    if let Some(language) = lookup(map, ext) {
        return Some(language);
    }
    if ext.len() > MAX_EXTENSION_LEN || !ext.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    // A stack copy keeps this per-file path free of allocation.
    let mut buffer = [0u8; MAX_EXTENSION_LEN];
    let lower = &mut buffer[..ext.len()];
    lower.copy_from_slice(ext);
    lower.make_ascii_lowercase();
    lookup(map, lower)
}

/// The program a `#!` first line runs, as a bare name: the basename of the first word, or, when
/// that is `env`, the basename of the program `env` is asked to run.
fn shebang_program(content: &[u8]) -> Option<&[u8]> {
    let window = &content[..content.len().min(SHEBANG_WINDOW)];
    let line = window.strip_prefix(b"#!")?;
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    // Splitting on ASCII whitespace and dropping empty words also trims, including a CR of CRLF.
    let mut words = line
        .split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty());
    let program = basename(words.next()?);
    if program == b"env" {
        env_program(words).map(basename)
    } else {
        Some(program)
    }
}

/// The program `env` runs: the first word that is neither an option (nor an option's argument) nor
/// a `NAME=VALUE` assignment. `-S` (split the rest into words) needs no special case, because the
/// line has already been split; only its glued forms (`-Sprog`, `--split-string=prog`) carry the
/// program inside the option word.
fn env_program<'a>(mut words: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    while let Some(word) = words.next() {
        if word.starts_with(b"-") {
            let glued = word
                .strip_prefix(b"--split-string=")
                .or_else(|| word.strip_prefix(b"-S"))
                .filter(|rest| !rest.is_empty() && !rest.starts_with(b"-"));
            if glued.is_some() {
                return glued;
            }
            if ENV_OPTIONS_WITH_ARGUMENT.contains(&word) {
                words.next();
            }
            continue;
        }
        if word.contains(&b'=') {
            continue;
        }
        return Some(word);
    }
    None
}

/// The interpreter's language: the exact program name first, so that names whose digits matter
/// (`perl6` is Raku, `v8` is JavaScript) keep their meaning, then the name without a trailing
/// version made of digits and dots (`python3.11` -> `python`, `perl5` -> `perl`).
fn lookup_interpreter(
    map: &HashMap<&'static str, &'static str>,
    program: &[u8],
) -> Option<&'static str> {
    if let Some(language) = lookup(map, program) {
        return Some(language);
    }
    let stem_len = program
        .iter()
        .rposition(|&b| !(b.is_ascii_digit() || b == b'.'))
        .map_or(0, |i| i + 1);
    if stem_len == 0 || stem_len == program.len() {
        return None;
    }
    lookup(map, &program[..stem_len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_path(path: &str) -> Option<&'static str> {
        detect(path.as_bytes(), b"")
    }

    fn by_shebang(line: &str) -> Option<&'static str> {
        detect(b"bin/tool", line.as_bytes())
    }

    #[test]
    fn detects_common_extensions_and_names() {
        let cases: &[(&str, &str)] = &[
            ("lib.rs", "Rust"),
            ("a.py", "Python"),
            ("a.pyi", "Python"),
            ("a.pyw", "Python"),
            ("a.c", "C"),
            ("a.h", "C"),
            ("a.cc", "C++"),
            ("a.cpp", "C++"),
            ("a.cxx", "C++"),
            ("a.hpp", "C++"),
            ("a.hh", "C++"),
            ("a.hxx", "C++"),
            ("a.h++", "C++"),
            ("a.c++", "C++"),
            ("a.C", "C++"),
            ("a.H", "C++"),
            ("main.go", "Go"),
            ("Main.java", "Java"),
            ("a.js", "JavaScript"),
            ("a.mjs", "JavaScript"),
            ("a.cjs", "JavaScript"),
            ("a.jsx", "JavaScript"),
            ("a.ts", "TypeScript"),
            ("a.mts", "TypeScript"),
            ("a.cts", "TypeScript"),
            ("a.tsx", "TSX"),
            ("a.rb", "Ruby"),
            ("Gemfile", "Ruby"),
            ("index.php", "PHP"),
            ("a.pl", "Perl"),
            ("a.pm", "Perl"),
            ("a.sh", "Shell"),
            ("a.bash", "Shell"),
            ("a.zsh", "Shell"),
            ("a.ksh", "Shell"),
            (".bashrc", "Shell"),
            (".bash_profile", "Shell"),
            (".zshrc", "Shell"),
            (".profile", "Shell"),
            ("a.ps1", "PowerShell"),
            ("README.md", "Markdown"),
            ("a.markdown", "Markdown"),
            ("a.rst", "reStructuredText"),
            ("package.json", "JSON"),
            ("a.yml", "YAML"),
            ("a.yaml", "YAML"),
            ("Cargo.toml", "TOML"),
            ("Cargo.lock", "TOML"),
            ("pom.xml", "XML"),
            ("index.html", "HTML"),
            ("index.htm", "HTML"),
            ("a.css", "CSS"),
            ("a.scss", "SCSS"),
            ("a.less", "Less"),
            ("a.sql", "SQL"),
            ("Makefile", "Makefile"),
            ("makefile", "Makefile"),
            ("GNUmakefile", "Makefile"),
            ("Kbuild", "Makefile"),
            ("rules.mk", "Makefile"),
            ("rules.mak", "Makefile"),
            ("CMakeLists.txt", "CMake"),
            ("a.cmake", "CMake"),
            ("Dockerfile", "Dockerfile"),
            ("build.dockerfile", "Dockerfile"),
            ("a.s", "Assembly"),
            ("a.S", "Assembly"),
            ("a.asm", "Assembly"),
            ("a.kt", "Kotlin"),
            ("a.swift", "Swift"),
            ("a.m", "Objective-C"),
            ("a.scala", "Scala"),
            ("a.hs", "Haskell"),
            ("a.ml", "OCaml"),
            ("a.erl", "Erlang"),
            ("a.ex", "Elixir"),
            ("a.clj", "Clojure"),
            ("a.lua", "Lua"),
            ("a.r", "R"),
            ("a.R", "R"),
            ("a.jl", "Julia"),
            ("a.dart", "Dart"),
            ("a.zig", "Zig"),
            ("a.nim", "Nim"),
            ("a.lisp", "Common Lisp"),
            ("init.el", "Emacs Lisp"),
            ("a.vim", "Vim Script"),
            (".vimrc", "Vim Script"),
            ("a.awk", "Awk"),
            ("a.tcl", "Tcl"),
            ("a.f90", "Fortran Free Form"),
            ("a.f", "Fortran"),
            ("a.pas", "Pascal"),
            ("a.groovy", "Groovy"),
            ("build.gradle", "Gradle"),
            ("a.proto", "Protocol Buffer"),
            ("notes.txt", "Text"),
            ("paper.tex", "TeX"),
            ("a.bat", "Batchfile"),
            ("a.cmd", "Batchfile"),
            ("board.dts", "Device Tree"),
            ("soc.dtsi", "Device Tree"),
            ("Kconfig", "Kconfig"),
            ("ls.1", "Roff"),
            ("a.ini", "INI"),
            ("setup.cfg", "INI"),
            ("a.diff", "Diff"),
            ("a.patch", "Diff"),
            ("a.csv", "CSV"),
            ("a.ipynb", "Jupyter Notebook"),
            ("defs.bzl", "Starlark"),
            ("BUILD.bazel", "Starlark"),
            ("WORKSPACE", "Starlark"),
            ("default.nix", "Nix"),
            ("a.hcl", "HCL"),
            ("main.tf", "HCL"),
            ("schema.graphql", "GraphQL"),
            ("App.svelte", "Svelte"),
            ("App.vue", "Vue"),
            ("a.cs", "C#"),
            ("a.fs", "F#"),
            ("a.vb", "Visual Basic .NET"),
            ("fix.cocci", "SmPL"),
            ("vmlinux.lds", "Linker Script"),
            ("link.ld", "Linker Script"),
            ("meson.build", "Meson"),
            (".gitconfig", "Git Config"),
            (".gitignore", "Ignore List"),
            (".dockerignore", "Ignore List"),
        ];
        for &(path, want) in cases {
            assert_eq!(by_path(path), Some(want), "{path}");
        }
    }

    #[test]
    fn file_name_wins_over_extension() {
        assert_eq!(by_path("CMakeLists.txt"), Some("CMake"));
        assert_eq!(by_path("requirements.txt"), Some("Pip Requirements"));
        assert_eq!(by_path("tsconfig.json"), Some("JSON with Comments"));
        assert_eq!(by_path("Makefile.PL"), Some("Perl"));
        assert_eq!(by_path("build.gradle.kts"), Some("Gradle Kotlin DSL"));
        assert_eq!(by_path("other.gradle.kts"), Some("Kotlin"));
    }

    #[test]
    fn only_the_last_extension_counts() {
        assert_eq!(by_path("a.tar.gz"), None);
        assert_eq!(by_path("foo.test.ts"), Some("TypeScript"));
        assert_eq!(by_path("app.config.js"), Some("JavaScript"));
        assert_eq!(by_path(".eslintrc.yml"), Some("YAML"));
        assert_eq!(by_path("trailing."), None);
    }

    #[test]
    fn uppercase_extensions_fall_back_to_lowercase() {
        assert_eq!(by_path("README.MD"), Some("Markdown"));
        assert_eq!(by_path("SETUP.PY"), Some("Python"));
        assert_eq!(by_path("Grammar.tmLanguage"), Some("XML Property List"));
        // Beyond the stack buffer: no allocation, no panic, no match.
        let long = format!("a.{}", "X".repeat(MAX_EXTENSION_LEN + 1));
        assert_eq!(by_path(&long), None);
    }

    #[test]
    fn directories_are_ignored() {
        assert_eq!(by_path("src/kernels/cpu.rs"), Some("Rust"));
        assert_eq!(by_path("a/b/c/Makefile"), Some("Makefile"));
        assert_eq!(by_path("docs.md/notes"), None);
        assert_eq!(by_path("src/"), None);
        assert_eq!(by_path(""), None);
    }

    #[test]
    fn non_utf8_bytes_never_match_or_panic() {
        assert_eq!(detect(b"src/\xff\xfe/caf\xe9.rs", b""), Some("Rust"));
        assert_eq!(detect(b"a.\xff", b""), None);
        assert_eq!(detect(b"a.\xffRS", b""), None);
        assert_eq!(detect(b"\xc3\x28", b""), None);
        assert_eq!(detect(b"bin/\xfftool", b"#!/bin/sh\n"), Some("Shell"));
        assert_eq!(detect(b"bin/tool", b"#!/usr/bin/\xff\xfe\n"), None);
        assert_eq!(detect(b"bin/tool", b"#!/usr/bin/env \xffpython\n"), None);
        assert_eq!(detect(b"bin/tool", b"\xff\xfe\x00\x01"), None);
    }

    #[test]
    fn shebang_variants() {
        assert_eq!(
            by_shebang("#!/usr/bin/env python3\nprint(1)\n"),
            Some("Python")
        );
        assert_eq!(by_shebang("#!/bin/sh\n"), Some("Shell"));
        assert_eq!(
            by_shebang("#!/usr/bin/env -S deno run\n"),
            Some("TypeScript")
        );
        assert_eq!(by_shebang("#! /usr/bin/perl -w\n"), Some("Perl"));
        assert_eq!(by_shebang("#!/usr/bin/python3.11"), Some("Python"));
        assert_eq!(by_shebang("#!/usr/bin/perl5\n"), Some("Perl"));
        assert_eq!(by_shebang("#!/usr/bin/env perl6\n"), Some("Raku"));
        assert_eq!(by_shebang("#!/usr/local/bin/tclsh8.6\n"), Some("Tcl"));
        assert_eq!(by_shebang("#!/usr/bin/env node\n"), Some("JavaScript"));
        assert_eq!(by_shebang("#!/bin/bash\r\necho\r\n"), Some("Shell"));
        assert_eq!(
            by_shebang("#!/usr/bin/env -S uv run --script\n"),
            Some("Python")
        );
        assert_eq!(by_shebang("#!/usr/bin/env -Spython3 -u\n"), Some("Python"));
        assert_eq!(
            by_shebang("#!/usr/bin/env --split-string=ruby -w\n"),
            Some("Ruby")
        );
        assert_eq!(
            by_shebang("#!/usr/bin/env LC_ALL=C FOO=1 awk -f\n"),
            Some("Awk")
        );
        assert_eq!(by_shebang("#!/usr/bin/env -i -u HOME ruby\n"), Some("Ruby"));
        assert_eq!(by_shebang("#!/usr/bin/env Rscript\n"), Some("R"));
        assert_eq!(by_shebang("#!/usr/bin/make -f\n"), Some("Makefile"));
    }

    #[test]
    fn shebangs_that_name_nothing() {
        assert_eq!(by_shebang("#!/usr/bin/env\n"), None);
        assert_eq!(by_shebang("#!/usr/bin/env -S\n"), None);
        assert_eq!(by_shebang("#!\n"), None);
        assert_eq!(by_shebang("#!"), None);
        assert_eq!(by_shebang("#!/usr/bin/frobnicate\n"), None);
        assert_eq!(by_shebang("#!/usr/bin/3.11\n"), None);
        assert_eq!(by_shebang(" #!/bin/sh\n"), None);
        assert_eq!(by_shebang("\n#!/bin/sh\n"), None);
        assert_eq!(by_shebang(""), None);
        // The program name lies past the inspected window.
        let far = format!("#!{}/bin/sh\n", " ".repeat(SHEBANG_WINDOW));
        assert_eq!(by_shebang(&far), None);
    }

    #[test]
    fn shebang_is_ignored_when_there_is_an_extension() {
        assert_eq!(detect(b"notes.txt", b"#!/bin/sh\n"), Some("Text"));
        assert_eq!(detect(b"tool.py", b"#!/bin/sh\n"), Some("Python"));
        assert_eq!(detect(b"tool.unknown", b"#!/bin/sh\n"), None);
        // A known file name also wins over the shebang.
        assert_eq!(
            detect(b"Makefile", b"#!/usr/bin/env python3\n"),
            Some("Makefile")
        );
        // A hidden name has no extension, so its shebang is read.
        assert_eq!(detect(b".hook", b"#!/bin/sh\n"), Some("Shell"));
    }

    /// Every key appears once in the whole table, so no row can silently shadow another.
    #[test]
    fn no_key_is_claimed_twice() {
        let selectors: [(&str, KeySelector); 3] = [
            ("extension", |def| def.extensions),
            ("filename", |def| def.filenames),
            ("interpreter", |def| def.interpreters),
        ];
        let mut duplicates = Vec::new();
        for (kind, keys) in selectors {
            let mut owner: HashMap<&str, &str> = HashMap::new();
            for def in LANGUAGES {
                for &key in keys(def) {
                    if let Some(previous) = owner.insert(key, def.name) {
                        duplicates.push(format!("{kind} {key:?}: {previous} and {}", def.name));
                    }
                }
            }
        }
        assert!(duplicates.is_empty(), "{duplicates:#?}");
        let mut names: Vec<&str> = LANGUAGES.iter().map(|def| def.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            language_count(),
            "a language name appears twice"
        );
    }

    #[test]
    fn table_keys_are_well_formed() {
        for def in LANGUAGES {
            assert!(
                !def.extensions.is_empty()
                    || !def.filenames.is_empty()
                    || !def.interpreters.is_empty(),
                "{} can never be detected",
                def.name
            );
            for ext in def.extensions {
                assert!(
                    !ext.is_empty() && !ext.contains(['.', '/']),
                    "{}: extension {ext:?}",
                    def.name
                );
                assert!(
                    ext.len() <= MAX_EXTENSION_LEN,
                    "{}: extension {ext:?} too long",
                    def.name
                );
                // An uppercase key is only reachable by an exact match, so it must be deliberate:
                // its lowercase form has to mean something else (as `.C` vs `.c`).
                let lower = ext.to_ascii_lowercase();
                if lower != *ext {
                    let other = INDEX.extensions.get(lower.as_str());
                    assert!(
                        other.is_some_and(|&o| o != def.name),
                        "{}: extension {ext:?}",
                        def.name
                    );
                }
            }
            for file in def.filenames {
                assert!(
                    !file.is_empty() && !file.contains('/'),
                    "{}: filename {file:?}",
                    def.name
                );
            }
            for program in def.interpreters {
                assert!(
                    !program.is_empty()
                        && !program.contains(|c: char| c == '/' || c.is_whitespace()),
                    "{}: interpreter {program:?}",
                    def.name
                );
            }
        }
    }

    /// Every key resolves to its own row through the public entry point, which also proves the
    /// resolution order never lets one table shadow a key of another.
    #[test]
    fn every_key_round_trips() {
        for def in LANGUAGES {
            for ext in def.extensions {
                assert_eq!(
                    by_path(&format!("dir/file.{ext}")),
                    Some(def.name),
                    "extension {ext:?}"
                );
            }
            for file in def.filenames {
                assert_eq!(
                    by_path(&format!("dir/{file}")),
                    Some(def.name),
                    "filename {file:?}"
                );
            }
            for program in def.interpreters {
                assert_eq!(
                    by_shebang(&format!("#!/usr/bin/{program}\n")),
                    Some(def.name),
                    "{program:?}"
                );
                assert_eq!(
                    by_shebang(&format!("#!/usr/bin/env {program} -x\n")),
                    Some(def.name),
                    "{program:?}"
                );
            }
        }
    }

    #[test]
    fn intern_returns_the_table_string() {
        for def in LANGUAGES {
            let owned = def.name.to_string();
            let interned = intern(&owned).expect(def.name);
            assert!(std::ptr::eq(interned, def.name), "{}", def.name);
        }
        assert_eq!(intern("Rust"), detect(b"lib.rs", b""));
        assert_eq!(intern("rust"), None);
        assert_eq!(intern(""), None);
    }

    #[test]
    fn table_is_large_enough() {
        assert!(language_count() >= 60, "{}", language_count());
    }
}
