//! What the example's process tests share: starting `user-example server` and reading the
//! address it bound.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The example binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_user-example");

/// The address a started server says it is bound to (it is given port 0, so no other
/// process can take the port in between); the rest of its stderr is drained.
pub fn bound_address(server: &mut Child) -> String {
    let stderr = server.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.strip_prefix("serving user.User on ")?;
            Some(rest.split(';').next()?.to_owned())
        })
        .expect("the server says where it listens");
    std::thread::spawn(move || lines.for_each(drop));
    address
}

/// Starts `user-example server` on a port the system picks, with `args` and `env` (and no
/// OTLP endpoint unless `env` names one); returns it and its address once it listens.
pub fn start_server(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut server = Command::new(BIN)
        .args(["server", "--address", "127.0.0.1:0"])
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = bound_address(&mut server);
    (server, address)
}
