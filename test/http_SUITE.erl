%% The http pool type and mongoose_http_client against inets httpd servers
%% started here on 127.0.0.1 (see http_test_handler): plain HTTP, HTTPS with
%% a test CA made with the openssl CLI, and HTTPS requiring a client
%% certificate.
-module(http_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

all() ->
    [{group, plain}, {group, tls}].

groups() ->
    [{plain, [], [get_with_headers, post_with_body, path_prefix_joining, status_codes,
                  redirects_are_answers, request_timeout, pool_timeout, connections_are_reused,
                  workers_bound_concurrency, available_worker_waits, refused_connection,
                  missing_pool, host_type_falls_back_to_global, bad_requests,
                  callback_module, legacy_tuple_and_toml, config_errors]},
     {tls, [], [https_verify_peer, https_wrong_ca, https_without_verification,
                https_server_name_host, https_sni_disabled_checks_chain_only, https_client_cert,
                https_versions_and_ciphers, tls_config_errors]}].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = application:ensure_all_started(ssl),
    ok = ensure_inets(),
    Dir = ?config(priv_dir, Config),
    Certs = mn_test_certs:make(Dir),
    Plain = start_httpd(Dir, []),
    Tls = start_httpd(Dir, [{socket_type, {ssl, [{certfile, cert(Certs, server)},
                                                  {keyfile, cert(Certs, server_key)}]}}]),
    Mutual = start_httpd(Dir, [{socket_type, {ssl, [{certfile, cert(Certs, server)},
                                                     {keyfile, cert(Certs, server_key)},
                                                     {cacertfile, cert(Certs, ca)},
                                                     {verify, verify_peer},
                                                     {fail_if_no_peer_cert, true}]}}]),
    [{certs, Certs}, {servers, [Plain, Tls, Mutual]},
     {port, port(Plain)}, {tls_port, port(Tls)}, {mutual_port, port(Mutual)} | Config].

end_per_suite(Config) ->
    [inets:stop(httpd, Pid) || Pid <- ?config(servers, Config)],
    ok.

init_per_group(_, Config) -> Config.
end_per_group(_, _Config) -> ok.

init_per_testcase(_, Config) -> Config.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

ensure_inets() ->
    case inets:start() of
        ok -> ok;
        {error, {already_started, inets}} -> ok
    end.

start_httpd(Dir, Extra) ->
    {ok, Pid} = inets:start(httpd, [{port, 0},
                                    {server_name, "mn_http_test"},
                                    {server_root, Dir},
                                    {document_root, Dir},
                                    {bind_address, {127, 0, 0, 1}},
                                    {ipfamily, inet},
                                    {modules, [http_test_handler]} | Extra]),
    Pid.

port(Pid) ->
    [{port, Port}] = httpd:info(Pid, [port]),
    Port.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

url(Config) -> "http://127.0.0.1:" ++ integer_to_list(?config(port, Config)).
tls_url(Config) -> "https://127.0.0.1:" ++ integer_to_list(?config(tls_port, Config)).

start_pool(Tag, ConnOpts) ->
    start_pool(Tag, [{workers, 2}], ConnOpts).

start_pool(Tag, PoolOpts, ConnOpts) ->
    {ok, _} = mongoose_wpool:start(http, global, Tag, PoolOpts, ConnOpts).

echo(Tag, Path) ->
    {ok, {<<"200">>, Body}} = mongoose_http_client:get(global, Tag, Path, []),
    binary_to_term(Body).

header(Name, #{headers := Headers}) ->
    proplists:get_value(Name, Headers).

%% Runs F in a process of its own, returning a function that waits for its result.
async(F) ->
    Self = self(),
    Ref = make_ref(),
    spawn_link(fun() -> Self ! {Ref, F()} end),
    fun() -> receive {Ref, R} -> R after 10000 -> error(no_async_result) end end.

%%--------------------------------------------------------------------
%% Plain HTTP
%%--------------------------------------------------------------------

get_with_headers(Config) ->
    start_pool(default, #{host => url(Config)}),
    {ok, {<<"200">>, Body}} =
        mongoose_http_client:get(global, default, <<"/echo?x=1&y=two">>,
                                 [{<<"X-Custom">>, <<"abc">>}, {"x-list", ["d", <<"e">>]},
                                  {<<"accept">>, <<"application/json">>}]),
    Echo = binary_to_term(Body),
    ?assertMatch(#{method := "GET", uri := "/echo?x=1&y=two", body := <<>>}, Echo),
    ?assertEqual("abc", header("x-custom", Echo)),
    ?assertEqual("de", header("x-list", Echo)),
    ?assertEqual("application/json", header("accept", Echo)),
    ?assertEqual("127.0.0.1:" ++ integer_to_list(?config(port, Config)), header("host", Echo)),
    %% The worker's own answer carries the response headers too.
    {ok, {<<"200">>, RespHeaders, _}} =
        mongoose_wpool:call(http, global, default, {request, <<"GET">>, <<"/echo">>, [], <<>>}),
    ?assertEqual(<<"yes">>, proplists:get_value(<<"x-echo">>, RespHeaders)).

post_with_body(Config) ->
    start_pool(default, #{host => url(Config)}),
    Json = <<"{\"user\":\"alice\",\"pass\":\"x\"}">>,
    {ok, {<<"200">>, Body}} =
        mongoose_http_client:post(global, default, <<"/auth">>,
                                  [{<<"content-type">>, <<"application/json">>}], Json),
    Echo = binary_to_term(Body),
    ?assertMatch(#{method := "POST", uri := "/auth", body := Json}, Echo),
    ?assertEqual("application/json", header("content-type", Echo)),
    ?assertEqual(integer_to_list(byte_size(Json)), header("content-length", Echo)),
    %% iodata bodies, empty bodies and large bodies.
    ?assertMatch(#{body := <<"abc">>}, post_echo(["a", [<<"b">>], $c])),
    ?assertMatch(#{body := <<>>}, post_echo(<<>>)),
    Big = crypto:strong_rand_bytes(300000),
    ?assertMatch(#{body := Big}, post_echo(Big)).

post_echo(Body) ->
    {ok, {<<"200">>, Answer}} = mongoose_http_client:post(global, default, "/echo", [], Body),
    binary_to_term(Answer).

path_prefix_joining(Config) ->
    start_pool(api, #{host => url(Config), path_prefix => <<"/echo/api/">>}),
    ?assertMatch(#{uri := "/echo/api/items?x=1"}, echo(api, <<"items?x=1">>)),
    ?assertMatch(#{uri := "/echo/api/items"}, echo(api, <<"/items">>)),
    ?assertMatch(#{uri := "/echo/api/"}, echo(api, <<>>)),
    start_pool(noslash, #{host => url(Config), path_prefix => "/echo/v1"}),
    ?assertMatch(#{uri := "/echo/v1/x"}, echo(noslash, "/x")),
    ?assertMatch(#{uri := "/echo/v1x"}, echo(noslash, "x")),
    %% The default prefix is "/".
    start_pool(default, #{host => url(Config)}),
    ?assertMatch(#{uri := "/echo"}, echo(default, <<"echo">>)),
    ?assertMatch(#{uri := "/echo"}, echo(default, <<"/echo">>)),
    %% A host with a trailing slash is the same host.
    start_pool(slash, #{host => url(Config) ++ "/", path_prefix => "/a/"}),
    ?assertMatch(#{uri := "/a/b"}, echo(slash, "b")).

status_codes(Config) ->
    start_pool(default, #{host => url(Config)}),
    [?assertEqual({ok, {integer_to_binary(Code), <<"status ", (integer_to_binary(Code))/binary>>}},
                  mongoose_http_client:get(global, default, "/status/" ++ integer_to_list(Code), []))
     || Code <- [200, 201, 202, 400, 401, 403, 404, 409, 500, 502, 503]],
    ?assertEqual({ok, {<<"500">>, <<"status 500">>}},
                 mongoose_http_client:post(global, default, <<"/status/500">>, [], <<"x">>)).

redirects_are_answers(Config) ->
    start_pool(default, #{host => url(Config)}),
    ?assertEqual({ok, {<<"302">>, <<"moved">>}},
                 mongoose_http_client:get(global, default, <<"/redirect">>, [])).

request_timeout(Config) ->
    start_pool(default, [{workers, 1}, {call_timeout, 5000}],
               #{host => url(Config), request_timeout => 300}),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, request_timeout},
                 mongoose_http_client:get(global, default, <<"/slow/2000">>, [])),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ?assert(Elapsed >= 300 andalso Elapsed < 1500, Elapsed),
    ?assertEqual({error, request_timeout},
                 mongoose_http_client:post(global, default, <<"/slow/2000">>, [], <<"b">>)),
    %% The (only) worker is still usable, and fast answers still come.
    ?assertMatch(#{method := "GET"}, echo(default, <<"/echo">>)),
    ?assertEqual({ok, {<<"200">>, <<"slow">>}},
                 mongoose_http_client:get(global, default, <<"/slow/50">>, [])).

pool_timeout(Config) ->
    start_pool(default, [{workers, 1}, {call_timeout, 300}],
               #{host => url(Config), request_timeout => 5000}),
    ?assertEqual({error, pool_timeout},
                 mongoose_http_client:get(global, default, <<"/slow/1000">>, [])),
    %% No late answer reaches the caller once the worker finishes.
    timer:sleep(1000),
    receive Late -> ct:fail({late_message, Late}) after 0 -> ok end,
    ?assertMatch(#{method := "GET"}, echo(default, <<"/echo">>)).

connections_are_reused(Config) ->
    start_pool(one, [{workers, 1}], #{host => url(Config)}),
    %% A connection goes back to the client's pool a moment after its
    %% answer (hyper's connection task returns it), so the calls are paced
    %% by 20 ms: on a loaded machine back-to-back calls may each find it not
    %% yet returned. Ten ports would mean none was reused.
    Echo = fun(Tag) -> timer:sleep(20), maps:get(peer_port, echo(Tag, "/echo")) end,
    Ports = [Echo(one) || _ <- lists:seq(1, 10)],
    ?assert(length(lists:usort(Ports)) =< 2),
    %% Several workers still share kept-alive connections.
    start_pool(many, [{workers, 4}, {strategy, next_worker}], #{host => url(Config)}),
    ManyPorts = [Echo(many) || _ <- lists:seq(1, 10)],
    ?assert(length(lists:usort(ManyPorts)) =< 2).

workers_bound_concurrency(Config) ->
    start_pool(default, [{workers, 2}, {strategy, next_available_worker}],
               #{host => url(Config)}),
    Slow = [async(fun() -> mongoose_http_client:get(global, default, "/slow/800", []) end)
            || _ <- [1, 2]],
    timer:sleep(300),
    %% Both workers are busy: the third request is refused at once.
    ?assertEqual({error, pool_down}, mongoose_http_client:get(global, default, "/echo", [])),
    ?assertEqual([{ok, {<<"200">>, <<"slow">>}}, {ok, {<<"200">>, <<"slow">>}}],
                 [Wait() || Wait <- Slow]),
    ?assertMatch(#{method := "GET"}, echo(default, "/echo")).

available_worker_waits(Config) ->
    start_pool(default, [{workers, 2}, {strategy, available_worker}, {call_timeout, 5000}],
               #{host => url(Config)}),
    T0 = erlang:monotonic_time(millisecond),
    Calls = [async(fun() -> mongoose_http_client:get(global, default, "/slow/400", []) end)
             || _ <- lists:seq(1, 4)],
    ?assertEqual(lists:duplicate(4, {ok, {<<"200">>, <<"slow">>}}), [Wait() || Wait <- Calls]),
    %% Two at a time: two rounds.
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ?assert(Elapsed >= 780, Elapsed),
    %% A caller that finds no free worker within call_timeout gets pool_timeout.
    start_pool(short, [{workers, 1}, {strategy, available_worker}, {call_timeout, 300}],
               #{host => url(Config)}),
    Busy = async(fun() -> mongoose_http_client:get(global, short, "/slow/900", []) end),
    timer:sleep(100),
    ?assertEqual({error, pool_timeout}, mongoose_http_client:get(global, short, "/echo", [])),
    ?assertEqual({error, pool_timeout}, Busy()).

refused_connection(_Config) ->
    {ok, Listen} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Listen),
    ok = gen_tcp:close(Listen),
    start_pool(default, #{host => "http://127.0.0.1:" ++ integer_to_list(Port)}),
    {error, {connection_refused, Msg}} =
        mongoose_http_client:get(global, default, <<"/x?token=secret">>, []),
    ?assertMatch({match, _}, re:run(Msg, "Connection refused")),
    ?assertEqual(nomatch, binary:match(Msg, <<"secret">>)),
    {error, {connection_refused, _}} = mongoose_http_client:post(global, default, <<"/x">>, [], <<"b">>).

missing_pool(Config) ->
    ?assertEqual({error, pool_not_started}, mongoose_http_client:get(global, nopool, <<"/">>, [])),
    ?assertEqual({error, pool_not_started},
                 mongoose_http_client:post(<<"localhost">>, nopool, <<"/">>, [], <<>>)),
    start_pool(gone, #{host => url(Config)}),
    ok = mongoose_wpool:stop(http, global, gone),
    ?assertEqual({error, pool_not_started}, mongoose_http_client:get(global, gone, <<"/">>, [])).

host_type_falls_back_to_global(Config) ->
    start_pool(shared, #{host => url(Config), path_prefix => "/global/"}),
    ?assertMatch(#{uri := "/global/x"}, host_echo(<<"a.com">>, shared, "x")),
    {ok, _} = mongoose_wpool:start(http, <<"b.com">>, shared, [{workers, 1}],
                                   #{host => url(Config), path_prefix => "/b/"}),
    ?assertMatch(#{uri := "/b/x"}, host_echo(<<"b.com">>, shared, "x")),
    ?assertMatch(#{uri := "/global/x"}, host_echo(<<"a.com">>, shared, "x")).

host_echo(HostType, Tag, Path) ->
    {ok, {<<"200">>, Body}} = mongoose_http_client:get(HostType, Tag, Path, []),
    binary_to_term(Body).

bad_requests(Config) ->
    start_pool(default, #{host => url(Config)}),
    {error, {bad_request, _}} = mongoose_http_client:get(global, default, "/", [{<<"bad name">>, <<"v">>}]),
    {error, {bad_request, _}} = mongoose_http_client:get(global, default, "/", [{<<"x">>, <<"a\nb">>}]),
    {error, {bad_request, _}} = mongoose_http_client:get(global, default, "/", [not_a_header]),
    {error, {bad_request, _}} = mongoose_http_client:post(global, default, "/", [], #{}),
    {error, {bad_request, _}} = mongoose_wpool:call(http, global, default, {get, "/"}),
    {error, {bad_request, _}} =
        mongoose_wpool:call(http, global, default, {request, <<"BAD METHOD">>, "/", [], <<>>}),
    %% Other methods work through the worker's request form.
    {ok, {<<"200">>, _, Body}} =
        mongoose_wpool:call(http, global, default, {request, put, "/echo", [], <<"p">>}),
    ?assertMatch(#{method := "PUT", body := <<"p">>}, binary_to_term(Body)).

callback_module(Config) ->
    ok = mongoose_wpool_http:init(),
    ?assert(lists:all(fun mongoose_wpool_http:is_supported_strategy/1,
                      [best_worker, random_worker, next_worker, available_worker,
                       next_available_worker])),
    {ok, _} = mongoose_wpool_http:start(global, cb, [{workers, 1}], #{host => url(Config)}),
    ?assertMatch(#{method := "GET"}, echo(cb, "/echo")),
    ok = mongoose_wpool_http:stop(global, cb),
    ?assertEqual({error, pool_not_started}, mongoose_http_client:get(global, cb, "/", [])),
    [begin
         Tag = list_to_atom("s_" ++ atom_to_list(S)),
         start_pool(Tag, [{workers, 2}, {strategy, S}], #{host => url(Config)}),
         ?assertMatch(#{method := "GET"}, echo(Tag, "/echo"))
     end || S <- [best_worker, random_worker, next_worker, available_worker,
                  next_available_worker]].

legacy_tuple_and_toml(Config) ->
    %% Seed 000's form: `server' instead of `host', charlists, a proplist.
    Legacy = {http, global, legacy, [{strategy, available_worker}, {workers, 2}],
              [{server, url(Config)}, {path_prefix, "/legacy/"}, {request_timeout, 1000}]},
    [{ok, _}] = mongoose_wpool:start_configured_pools([Legacy], []),
    ?assertMatch(#{uri := "/legacy/x"}, echo(legacy, "x")),
    File = filename:join(?config(priv_dir, Config), "http_pools.toml"),
    ok = file:write_file(File, iolist_to_binary(["
[outgoing_pools.http.from_toml]
  scope = \"global\"
  workers = 3
  strategy = \"next_worker\"
  [outgoing_pools.http.from_toml.connection]
    host = \"", url(Config), "\"
    path_prefix = \"/toml/\"
    request_timeout = 500
"])),
    {ok, Pools} = mongoose_native_config:pools_from_toml(File),
    [{ok, _}] = mongoose_wpool:start_configured_pools(Pools, []),
    ?assertMatch(#{uri := "/toml/y"}, echo(from_toml, "y")),
    ?assertEqual({error, request_timeout},
                 mongoose_http_client:get(global, from_toml, "/slow/1500", [])).

config_errors(_Config) ->
    Err = fun(ConnOpts) ->
                  {error, {invalid_config, Msg}} =
                      mongoose_wpool:start(http, global, bad, [], ConnOpts),
                  Msg
          end,
    ?assertEqual(<<"outgoing_pools.http.bad.connection.request_timeout: expected a positive integer, got -1">>,
                 Err(#{host => "http://127.0.0.1", request_timeout => -1})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.hots: unknown option", _/binary>>,
                 Err(#{hots => "http://127.0.0.1"})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.host: expected \"http[s]://name[:port]\"", _/binary>>,
                 Err(#{host => "ftp://127.0.0.1"})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.host: expected", _/binary>>,
                 Err(#{host => "http://127.0.0.1/api"})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.path_prefix: expected a string", _/binary>>,
                 Err([{server, "http://127.0.0.1"}, {path_prefix, 12}])),
    Secret = Err(#{host => "https://admin:hunter2@127.0.0.1"}),
    ?assertEqual(nomatch, binary:match(Secret, <<"hunter2">>)),
    ?assertMatch({error, {invalid_config, <<"outgoing_pools.http.bad.workers: ", _/binary>>}},
                 mongoose_wpool:start(http, global, bad, [{workers, 0}], #{})),
    ?assertEqual([], mongoose_wpool:get_pools()).

%%--------------------------------------------------------------------
%% TLS
%%--------------------------------------------------------------------

tls_opts(Config, Extra) ->
    maps:merge(#{verify_peer => true, cacertfile => cert(?config(certs, Config), ca)}, Extra).

https_verify_peer(Config) ->
    start_pool(default, #{host => tls_url(Config), tls => tls_opts(Config, #{})}),
    Echo = echo(default, "/echo"),
    ?assertMatch(#{method := "GET", client_cert := false}, Echo),
    ?assertNotEqual(none, maps:get(tls_version, Echo)),
    %% By DNS name, and with MongooseIM 6.3's verify_mode.
    Named = "https://localhost:" ++ integer_to_list(?config(tls_port, Config)),
    start_pool(named, #{host => Named,
                        tls => #{verify_mode => peer,
                                 cacertfile => cert(?config(certs, Config), ca)}}),
    ?assertMatch(#{method := "GET"}, echo(named, "/echo")),
    {ok, {<<"200">>, Body}} = mongoose_http_client:post(global, named, "/echo", [], <<"over tls">>),
    ?assertMatch(#{body := <<"over tls">>}, binary_to_term(Body)).

https_wrong_ca(Config) ->
    Other = cert(?config(certs, Config), other_ca),
    start_pool(default, #{host => tls_url(Config), tls => tls_opts(Config, #{cacertfile => Other})}),
    {error, {tls_error, Msg}} = mongoose_http_client:get(global, default, "/echo", []),
    ct:log("wrong CA: ~s", [Msg]),
    ?assertMatch({match, _}, re:run(Msg, "certificate|issuer", [caseless])),
    %% Plain HTTP to a TLS port is no TLS failure: the server just answers oddly.
    start_pool(tls_to_plain, #{host => "https://127.0.0.1:" ++ integer_to_list(?config(port, Config))}),
    {error, {tls_error, _}} = mongoose_http_client:get(global, tls_to_plain, "/echo", []).

https_without_verification(Config) ->
    start_pool(default, #{host => tls_url(Config)}),
    ?assertMatch(#{method := "GET"}, echo(default, "/echo")),
    %% verify_peer = false ignores a CA that would not match.
    Other = cert(?config(certs, Config), other_ca),
    start_pool(noverify, #{host => tls_url(Config),
                           tls => #{verify_peer => false, cacertfile => Other}}),
    ?assertMatch(#{method := "GET"}, echo(noverify, "/echo")).

https_server_name_host(Config) ->
    %% The certificate is for localhost (and 127.0.0.1); checked against the
    %% configured name instead of the URL's host.
    start_pool(good, #{host => tls_url(Config),
                       tls => tls_opts(Config, #{server_name_indication => true,
                                                 server_name_indication_host => "localhost"})}),
    ?assertMatch(#{method := "GET"}, echo(good, "/echo")),
    start_pool(good63, #{host => tls_url(Config),
                         tls => tls_opts(Config, #{server_name_indication =>
                                                       #{enabled => true, host => "localhost",
                                                         protocol => https}})}),
    ?assertMatch(#{method := "GET"}, echo(good63, "/echo")),
    start_pool(bad, #{host => tls_url(Config),
                      tls => tls_opts(Config, #{server_name_indication_host => "other.example"})}),
    {error, {tls_error, Msg}} = mongoose_http_client:get(global, bad, "/echo", []),
    ct:log("wrong name: ~s", [Msg]).

https_sni_disabled_checks_chain_only(Config) ->
    start_pool(nosni, #{host => tls_url(Config),
                        tls => tls_opts(Config, #{server_name_indication => false})}),
    ?assertMatch(#{method := "GET"}, echo(nosni, "/echo")),
    Other = cert(?config(certs, Config), other_ca),
    start_pool(nosni_bad, #{host => tls_url(Config),
                            tls => tls_opts(Config, #{server_name_indication => false,
                                                      cacertfile => Other})}),
    {error, {tls_error, _}} = mongoose_http_client:get(global, nosni_bad, "/echo", []).

https_client_cert(Config) ->
    Certs = ?config(certs, Config),
    Url = "https://127.0.0.1:" ++ integer_to_list(?config(mutual_port, Config)),
    start_pool(with_cert, #{host => Url,
                            tls => tls_opts(Config, #{certfile => cert(Certs, client),
                                                      keyfile => cert(Certs, client_key)})}),
    ?assertMatch(#{client_cert := true}, echo(with_cert, "/echo")),
    %% The certificate and key in one file, as seed 002 describes certfile.
    start_pool(combined, #{host => Url,
                           tls => tls_opts(Config, #{certfile => cert(Certs, client_combined)})}),
    ?assertMatch(#{client_cert := true}, echo(combined, "/echo")),
    start_pool(without_cert, #{host => Url, tls => tls_opts(Config, #{})}),
    {error, {Kind, Msg}} = mongoose_http_client:get(global, without_cert, "/echo", []),
    ct:log("no client certificate: ~p ~s", [Kind, Msg]),
    ?assertEqual(tls_error, Kind).

https_versions_and_ciphers(Config) ->
    start_pool(v12, #{host => tls_url(Config), tls => tls_opts(Config, #{versions => ["tlsv1.2"]})}),
    ?assertMatch(#{tls_version := 'tlsv1.2'}, echo(v12, "/echo")),
    start_pool(v13, #{host => tls_url(Config), tls => tls_opts(Config, #{versions => ["tlsv1.3"]})}),
    ?assertMatch(#{tls_version := 'tlsv1.3'}, echo(v13, "/echo")),
    start_pool(cipher, #{host => tls_url(Config),
                         tls => tls_opts(Config, #{ciphers => "ECDHE-ECDSA-AES128-GCM-SHA256",
                                                   dhfile => "unused.pem"})}),
    ?assertMatch(#{tls_version := 'tlsv1.2'}, echo(cipher, "/echo")),
    %% An RSA-only suite cannot work with the server's EC key.
    start_pool(rsa_only, #{host => tls_url(Config),
                           tls => tls_opts(Config, #{ciphers => "ECDHE-RSA-AES128-GCM-SHA256"})}),
    {error, {tls_error, _}} = mongoose_http_client:get(global, rsa_only, "/echo", []).

tls_config_errors(Config) ->
    Err = fun(Tls) ->
                  {error, {invalid_config, Msg}} =
                      mongoose_wpool:start(http, global, bad, [], #{host => tls_url(Config),
                                                                    tls => Tls}),
                  Msg
          end,
    ?assertMatch(<<"outgoing_pools.http.bad.connection.tls.cacertfile: cannot read \"/nonexistent.pem\"",
                   _/binary>>,
                 Err(#{verify_peer => true, cacertfile => "/nonexistent.pem"})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.tls.verify: unknown option", _/binary>>,
                 Err(#{verify => verify_peer})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.tls.ciphers: rustls cannot honour", _/binary>>,
                 Err(#{ciphers => "HIGH:!aNULL"})),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.tls.verify_mode: selfsigned_peer", _/binary>>,
                 Err(#{verify_mode => selfsigned_peer})),
    Key = cert(?config(certs, Config), client_key),
    ?assertMatch(<<"outgoing_pools.http.bad.connection.tls.certfile: no certificate found", _/binary>>,
                 Err(#{certfile => Key})),
    Secret = Err(#{certfile => cert(?config(certs, Config), client), password => "s3cr3t-pass"}),
    ?assertEqual(nomatch, binary:match(Secret, <<"s3cr3t-pass">>)),
    ?assertEqual([], mongoose_wpool:get_pools()).

%%--------------------------------------------------------------------
%% Certificates, made with the openssl CLI
%%--------------------------------------------------------------------

cert(Certs, Name) -> maps:get(Name, Certs).
