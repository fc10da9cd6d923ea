%% Test certificates made with the openssl CLI: a CA, another CA, a server
%% certificate for localhost/127.0.0.1, a client certificate, and datacenter
%% certificates (server and client use) from the CA and from the other CA.
-module(mn_test_certs).
-export([make/1]).

make(Dir0) ->
    Dir = filename:join(Dir0, "certs"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Cnf = filename:join(Dir, "openssl.cnf"),
    ok = file:write_file(Cnf, <<"
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[dc_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
">>),
    F = fun(Name) -> filename:join(Dir, Name) end,
    Key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    [openssl(Dir, ["req", "-x509", "-new" | Key] ++
                  ["-keyout", F(Name ++ ".key"), "-out", F(Name ++ ".pem"), "-days", "3",
                   "-subj", "/CN=" ++ Name, "-config", Cnf, "-extensions", "ca_ext"])
     || Name <- ["ca", "other_ca"]],
    Leaf = fun(Name, Ext, Serial, CA) ->
                   openssl(Dir, ["req", "-new" | Key] ++
                               ["-keyout", F(Name ++ ".key"), "-out", F(Name ++ ".csr"),
                                "-subj", "/CN=" ++ Name, "-config", Cnf]),
                   openssl(Dir, ["x509", "-req", "-in", F(Name ++ ".csr"), "-CA", F(CA ++ ".pem"),
                                 "-CAkey", F(CA ++ ".key"), "-set_serial", Serial, "-days", "3",
                                 "-out", F(Name ++ ".pem"), "-extfile", Cnf, "-extensions", Ext])
           end,
    Leaf("localhost", "server_ext", "101", "ca"),
    Leaf("client", "client_ext", "102", "ca"),
    Leaf("dc", "dc_ext", "103", "ca"),
    Leaf("rogue_dc", "dc_ext", "104", "other_ca"),
    Combine = fun(Name) ->
                      {ok, Pem} = file:read_file(F(Name ++ ".pem")),
                      {ok, PemKey} = file:read_file(F(Name ++ ".key")),
                      ok = file:write_file(F(Name ++ "_combined.pem"), [Pem, PemKey])
              end,
    [Combine(N) || N <- ["client", "dc", "rogue_dc"]],
    #{ca => F("ca.pem"), other_ca => F("other_ca.pem"),
      server => F("localhost.pem"), server_key => F("localhost.key"),
      client => F("client.pem"), client_key => F("client.key"),
      client_combined => F("client_combined.pem"),
      %% Certificate and key in one file, good for serving and dialling:
      dc => F("dc_combined.pem"), rogue_dc => F("rogue_dc_combined.pem")}.

openssl(Dir, Args) ->
    Exe = os:find_executable("openssl"),
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, {cd, Dir}, exit_status, stderr_to_stdout, binary]),
    case collect(Port, <<>>) of
        {0, _} -> ok;
        {Status, Out} -> ct:fail({openssl_failed, Args, Status, Out})
    end.

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, Acc}
    after 30000 -> {timeout, Acc}
    end.
