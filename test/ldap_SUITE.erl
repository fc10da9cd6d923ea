%% The ldap pool type against a real OpenLDAP: a private slapd this suite
%% makes with scripts/slapd.sh (the script setup.sh uses), kills and
%% restarts. Answers are compared with what OTP's eldap gives for the same
%% request on the same server.
-module(ldap_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(PORT, 13389).
-define(LDAPS_PORT, 13636).
-define(ROOT, "cn=admin,dc=example,dc=com").
-define(PEOPLE, "ou=people,dc=example,dc=com").
-define(ALICE, "uid=alice,ou=people,dc=example,dc=com").

all() ->
    [searches_match_eldap, binds, identity_is_restored, anonymous_pool, writes,
     modify_password, eldap_pool_api, bad_requests, bad_configs, failover,
     reconnect_after_restart, closed_under_a_request, ldaps, silent_server,
     stopped_server_times_out].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    Dir = filename:join(?config(priv_dir, Config), "slapd"),
    start_slapd(Dir),
    [{slapd, Dir} | Config].

end_per_suite(Config) ->
    slapd("stop " ++ ?config(slapd, Config)),
    ok.

init_per_testcase(_, Config) ->
    start_slapd(?config(slapd, Config)),
    {ok, _} = start(default, #{}),
    Config.

end_per_testcase(_, Config) ->
    os:cmd("kill -CONT " ++ slapd_pid(?config(slapd, Config))),
    mongoose_wpool:stop(),
    ok.

%%--------------------------------------------------------------------
%% Helpers

slapd(Args) ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    Script = filename:join([filename:dirname(filename:dirname(Source)), "scripts", "slapd.sh"]),
    os:cmd("bash " ++ Script ++ " " ++ Args ++ " 2>&1").

start_slapd(Dir) ->
    Out = slapd(lists:flatten(io_lib:format("start ~s ~b ~b", [Dir, ?PORT, ?LDAPS_PORT]))),
    case string:trim(Out) of
        R when R =:= "up"; R =:= "started" -> ok;
        Other -> ct:fail({slapd_did_not_start, Other})
    end.

slapd_pid(Dir) ->
    {ok, Pid} = file:read_file(filename:join(Dir, "slapd.pid")),
    string:trim(binary_to_list(Pid)).

conn(Extra) ->
    maps:merge(#{servers => ["127.0.0.1"], port => ?PORT, rootdn => <<?ROOT>>,
                 password => <<"secret">>}, Extra).

start(Tag, Extra) ->
    start(Tag, [{workers, 2}], Extra).

start(Tag, PoolOpts, Extra) ->
    mongoose_wpool:start(ldap, global, Tag, PoolOpts, conn(Extra)).

call(Request) -> call(default, Request).
call(Tag, Request) -> mongoose_wpool:call(ldap, global, Tag, Request).

search(Opts) -> call({search, [Opts]}).

%% OTP's eldap, bound as the root DN, on the same server.
eldap_handle() ->
    {ok, H} = eldap:open(["127.0.0.1"], [{port, ?PORT}]),
    ok = eldap:simple_bind(H, ?ROOT, "secret"),
    H.

%% Entries in a canonical order (both sides keep the server's order, but
%% the comparison should not depend on it).
sorted({ok, {eldap_search_result, Entries, Refs, Controls}}) ->
    {ok, {eldap_search_result, lists:sort([{eldap_entry, DN, lists:sort(As)}
                                          || {eldap_entry, DN, As} <- Entries]),
          Refs, Controls}};
sorted(Other) ->
    Other.

uids({ok, {eldap_search_result, Entries, _, _}}) ->
    lists:sort([V || {eldap_entry, _, Attrs} <- Entries, {"uid", [V]} <- Attrs]).

add_user(Uid, Password) ->
    call({add, ["uid=" ++ Uid ++ "," ++ ?PEOPLE,
                [{"objectClass", ["inetOrgPerson"]}, {"uid", [Uid]}, {"cn", [Uid]},
                 {"sn", ["Test"]}, {"userPassword", [Password]}]]}).

%%--------------------------------------------------------------------

searches_match_eldap(_Config) ->
    H = eldap_handle(),
    Filters = [eldap:equalityMatch("uid", "alice"),
               eldap:substrings("cn", [{initial, "A"}]),
               eldap:substrings("mail", [{any, "o"}, {final, "example.com"}]),
               eldap:present("mail"),
               eldap:'and'([eldap:present("uid"), eldap:'not'(eldap:equalityMatch("uid", "bob"))]),
               eldap:'or'([eldap:equalityMatch("uid", "bob"), eldap:equalityMatch("uid", "carol")]),
               eldap:greaterOrEqual("employeeNumber", "2"),
               eldap:lessOrEqual("employeeNumber", "2"),
               eldap:approxMatch("cn", "Alice"),
               eldap:extensibleMatch("Carol", [{type, "cn"}, {matchingRule, "caseExactMatch"}]),
               eldap:equalityMatch("uid", "nobody")],
    Bases = [{"dc=example,dc=com", wholeSubtree}, {?PEOPLE, singleLevel},
             {?ALICE, baseObject}, {"dc=example,dc=com", singleLevel}],
    Cases = [[{base, Base}, {filter, F}, {scope, Scope}] ++ Attrs
             || F <- Filters, {Base, Scope} <- Bases,
                Attrs <- [[], [{attributes, ["mail", "cn"]}]]],
    [?assertEqual({Opts, sorted(eldap:search(H, Opts))}, {Opts, sorted(search(Opts))})
     || Opts <- Cases],
    %% The same order as eldap's too, and the exact record.
    Everyone = [{base, ?PEOPLE}, {filter, eldap:present("uid")},
                {attributes, ["uid", "mail"]}, {deref, eldap:neverDerefAliases()},
                {timeout, 5}],
    ?assertEqual(eldap:search(H, Everyone), search(Everyone)),
    ?assertEqual(["alice", "bob", "carol"], uids(search(Everyone))),
    {ok, {eldap_search_result, [{eldap_entry, ?ALICE, [{"mail", ["alice@example.com"]}]}],
          [], asn1_NOVALUE}} =
        search([{base, ?PEOPLE}, {filter, eldap:equalityMatch("uid", "alice")},
                {attributes, ["mail"]}]),
    %% size_limit: the entries up to the limit, as eldap gives them.
    Limited = [{base, ?PEOPLE}, {filter, eldap:present("uid")}, {size_limit, 2}],
    {ok, {eldap_search_result, Two, _, _}} = search(Limited),
    ?assertEqual(2, length(Two)),
    ?assertEqual(length(element(2, element(2, eldap:search(H, Limited)))), length(Two)),
    %% types_only: names without values.
    {ok, {eldap_search_result, [{eldap_entry, ?ALICE, [{"mail", []}]}], _, _}} =
        search([{base, ?ALICE}, {scope, baseObject}, {filter, eldap:present("objectClass")},
                {attributes, ["mail"]}, {types_only, true}]),
    %% A base that is not there: eldap's error.
    Missing = [{base, "ou=nowhere,dc=example,dc=com"}, {filter, eldap:present("uid")}],
    ?assertEqual({error, noSuchObject}, search(Missing)),
    ?assertEqual(eldap:search(H, Missing), search(Missing)),
    eldap:close(H).

binds(_Config) ->
    ?assertEqual(ok, call({simple_bind, [?ALICE, "alicepw"]})),
    ?assertEqual(ok, call({simple_bind, [<<?ALICE>>, <<"alicepw">>]})),
    ?assertEqual({error, invalidCredentials}, call({simple_bind, [?ALICE, "wrong"]})),
    ?assertEqual({error, invalidCredentials},
                 call({simple_bind, ["uid=nobody," ++ ?PEOPLE, "x"]})),
    %% Anonymous: an empty DN and password.
    ?assertEqual(ok, call({simple_bind, ["", ""]})),
    ?assertEqual(ok, call({simple_bind, [?ROOT, "secret"]})).

%% A caller's bind never leaks to the next caller: only the root DN may
%% write, and every write after a user's bind still succeeds.
identity_is_restored(_Config) ->
    {ok, _} = start(one, [{workers, 1}], #{}),
    lists:foreach(
      fun(I) ->
              Pw = case I rem 2 of 0 -> "alicepw"; 1 -> "wrong" end,
              _ = call(one, {simple_bind, [?ALICE, Pw]}),
              Uid = "restored" ++ integer_to_list(I),
              ?assertEqual(ok, call(one, {add, ["uid=" ++ Uid ++ "," ++ ?PEOPLE,
                                                [{"objectClass", ["inetOrgPerson"]},
                                                 {"uid", [Uid]}, {"cn", [Uid]},
                                                 {"sn", ["X"]}]]})),
              ?assertEqual(ok, call(one, {delete, ["uid=" ++ Uid ++ "," ++ ?PEOPLE]}))
      end, lists:seq(1, 4)),
    %% The same through eldap_pool:bind/3, which binds on a lease.
    ok = eldap_pool:bind({global, one}, <<?ALICE>>, <<"alicepw">>),
    {error, invalidCredentials} = eldap_pool:bind({global, one}, ?ALICE, "nope"),
    ?assertEqual(ok, add_user("leased", "pw")),
    ?assertEqual(ok, call(one, {delete, ["uid=leased," ++ ?PEOPLE]})).

anonymous_pool(_Config) ->
    {ok, _} = start(anon, #{rootdn => <<>>, password => <<>>}),
    ?assertEqual(["alice", "bob", "carol"],
                 uids(call(anon, {search, [[{base, ?PEOPLE}, {filter, eldap:present("uid")},
                                            {attributes, ["uid"]}]]}))),
    %% The server refuses an anonymous write, as it refuses eldap's.
    {ok, H} = eldap:open(["127.0.0.1"], [{port, ?PORT}]),
    Add = ["uid=anon," ++ ?PEOPLE, [{"objectClass", ["inetOrgPerson"]}, {"uid", ["anon"]},
                                    {"cn", ["a"]}, {"sn", ["a"]}]],
    {error, Refused} = call(anon, {add, Add}),
    ?assertEqual({error, Refused}, apply(eldap, add, [H | Add])),
    eldap:close(H).

writes(_Config) ->
    Dn = "uid=dave," ++ ?PEOPLE,
    ?assertEqual(ok, add_user("dave", "davepw")),
    ?assertEqual({error, entryAlreadyExists}, add_user("dave", "davepw")),
    ?assertEqual(ok, call({modify, [Dn, [eldap:mod_replace("sn", ["Davis"]),
                                         eldap:mod_add("mail", ["d1@example.com", "d2@example.com"]),
                                         eldap:mod_add("description", ["x"])]]})),
    ?assertEqual(ok, call({modify, [Dn, [eldap:mod_delete("mail", ["d1@example.com"]),
                                         eldap:mod_delete("description", [])]]})),
    ?assertEqual({error, noSuchAttribute},
                 call({modify, [Dn, [eldap:mod_delete("description", [])]]})),
    {ok, {eldap_search_result, [{eldap_entry, Dn, Attrs}], _, _}} =
        search([{base, Dn}, {scope, baseObject}, {filter, eldap:present("objectClass")},
                {attributes, ["sn", "mail", "description"]}]),
    ?assertEqual([{"mail", ["d2@example.com"]}, {"sn", ["Davis"]}], lists:sort(Attrs)),
    ?assertEqual(ok, call({modify_dn, [Dn, "uid=david", true, ""]})),
    ?assertEqual({error, noSuchObject}, call({delete, [Dn]})),
    ?assertEqual(ok, call({delete, ["uid=david," ++ ?PEOPLE]})),
    ?assertEqual({error, noSuchObject}, call({delete, ["uid=david," ++ ?PEOPLE]})),
    ?assertEqual({error, noSuchObject}, call({modify, [Dn, [eldap:mod_replace("sn", ["x"])]]})).

modify_password(_Config) ->
    Dn = "uid=erin," ++ ?PEOPLE,
    ok = add_user("erin", "erinpw"),
    ?assertEqual(ok, call({modify_password, [Dn, "newpw"]})),
    ?assertEqual({error, invalidCredentials}, call({simple_bind, [Dn, "erinpw"]})),
    ?assertEqual(ok, call({simple_bind, [Dn, "newpw"]})),
    {ok, Generated} = call({modify_password, [Dn, ""]}),
    ?assert(is_list(Generated) andalso length(Generated) > 0),
    ?assertEqual(ok, call({simple_bind, [Dn, Generated]})),
    ?assertEqual({error, {response, noSuchObject}},
                 call({modify_password, ["uid=nobody," ++ ?PEOPLE, "x"]})),
    ok = call({delete, [Dn]}).

eldap_pool_api(_Config) ->
    Pool = {global, default},
    ?assertEqual(ok, eldap_pool:bind(Pool, <<?ALICE>>, <<"alicepw">>)),
    ?assertEqual({error, invalidCredentials}, eldap_pool:bind(Pool, <<?ALICE>>, <<"no">>)),
    {eldap_search_result, [{eldap_entry, <<?ALICE>>, [{<<"mail">>, [<<"alice@example.com">>]}]}],
     [], asn1_NOVALUE} =
        eldap_pool:search(Pool, [{base, <<?PEOPLE>>}, {filter, eldap:equalityMatch("uid", "alice")},
                                 {attributes, [<<"mail">>]}]),
    Dn = <<"uid=frank,", ?PEOPLE>>,
    ?assertEqual(ok, eldap_pool:add(Pool, Dn, [{<<"objectClass">>, [<<"inetOrgPerson">>]},
                                               {<<"uid">>, [<<"frank">>]}, {<<"cn">>, [<<"F">>]},
                                               {<<"sn">>, [<<"F">>]}])),
    ?assertEqual(ok, eldap_pool:modify_passwd(Pool, Dn, <<"frankpw">>)),
    ?assertEqual(ok, eldap_pool:bind(Pool, Dn, <<"frankpw">>)),
    ?assertMatch({ok, [_ | _]}, eldap_pool:modify_passwd(Pool, Dn, <<>>)),
    ?assertEqual(ok, eldap_pool:delete(Pool, Dn)),
    ?assertEqual(not_exists, eldap_pool:delete(Pool, Dn)),
    ?assertEqual({error, {pool_not_started, {ldap, global, nope}}},
                 eldap_pool:bind({global, nope}, Dn, <<"x">>)).

bad_requests(_Config) ->
    Bad = [{search, [[{base, ?PEOPLE}, {filter, {equals, "uid", "x"}}]]},
           {search, [[{base, ?PEOPLE}, {filter, eldap:present("not an attribute")}]]},
           {search, [[{base, ?PEOPLE}]]},
           {search, [[{base, ?PEOPLE}, {filter, eldap:present("uid")}, {scope, everywhere}]]},
           {search, [[{base, ?PEOPLE}, {filter, eldap:present("uid")}, {size_limit, -1}]]},
           {search, [[{filter, eldap:present("uid")}, {colour, blue}]]},
           {search, [[{base, ?PEOPLE}, {filter, eldap:substrings("cn", [{any, ""}])}]]},
           {simple_bind, [?ALICE]},
           {add, [?ALICE, [not_a_pair]]},
           {modify, [?ALICE, [{replace, "sn", ["x"]}]]},
           {close, []},
           not_a_request],
    [?assertMatch({Req, {error, {bad_request, <<_/binary>>}}}, {Req, call(Req)}) || Req <- Bad],
    %% Still serving.
    ?assertEqual(ok, call({simple_bind, [?ALICE, "alicepw"]})).

bad_configs(_Config) ->
    {error, {connect_failed, Refused}} = start(wrongpw, #{password => <<"Canary-Pw-1">>}),
    ?assertNotEqual(nomatch, binary:match(Refused, <<"connection.rootdn">>)),
    ?assertNotEqual(nomatch, binary:match(Refused, <<"connection.password">>)),
    ?assertNotEqual(nomatch, binary:match(Refused, <<"invalidCredentials">>)),
    ?assertEqual(nomatch, binary:match(Refused, <<"Canary">>)),
    {error, {connect_failed, Unreachable}} = start(unreachable, #{servers => ["127.0.0.1"], port => 1}),
    ?assertMatch(<<"ldap: ldap://127.0.0.1:1: ", _/binary>>, Unreachable),
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.ldap.cfg.connection.port: expected an integer between 1 and 65535, got 0">>}},
                 start(cfg, #{port => 0})),
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.ldap.cfg.connection.servers: expected a non-empty list of host names, got []">>}},
                 start(cfg, #{servers => []})),
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.ldap.cfg.connection.encrypt: expected one of none, tls, got <<\"starttls\">>">>}},
                 start(cfg, #{encrypt => <<"starttls">>})),
    {error, {invalid_config, Secret}} = start(cfg, #{password => 12345}),
    ?assertMatch(<<"outgoing_pools.ldap.cfg.connection.password: expected a string, got an integer">>, Secret),
    {error, {invalid_config, Unknown}} = start(cfg, #{colour => blue}),
    ?assertMatch(<<"outgoing_pools.ldap.cfg.connection.colour: unknown option", _/binary>>, Unknown),
    %% The TOML form: rootdn (seed 002) and root_dn (MongooseIM 6.x) both read.
    File = filename:join(?config(priv_dir, _Config), "ldap.toml"),
    ok = file:write_file(File, io_lib:format(
        "[outgoing_pools.ldap.toml1]\nworkers = 1\nconnection.servers = [\"127.0.0.1\"]\n"
        "connection.port = ~b\nconnection.root_dn = \"~s\"\nconnection.password = \"secret\"\n",
        [?PORT, ?ROOT])),
    {ok, Pools} = mongoose_native_config:pools_from_toml(File),
    [{ok, _}] = mongoose_wpool:start_configured_pools(Pools, []),
    ?assertEqual(ok, call(toml1, {simple_bind, [?ALICE, "alicepw"]})).

failover(_Config) ->
    %% Nothing listens on 127.0.0.2: the next server in the list is used.
    {ok, _} = start(fo, #{servers => ["127.0.0.2", "127.0.0.1"]}),
    ?assertEqual(ok, call(fo, {simple_bind, [?ALICE, "alicepw"]})),
    ?assert(all_connected(fo)).

reconnect_after_restart(Config) ->
    Dir = ?config(slapd, Config),
    {ok, _} = start(rs, [{workers, 2}], #{}),
    ok = call(rs, {simple_bind, [?ALICE, "alicepw"]}),
    os:cmd("kill -9 " ++ slapd_pid(Dir)),
    %% While no server answers: MongooseIM's not_connected.
    ok = wait_until(fun() -> call(rs, {simple_bind, [?ALICE, "alicepw"]}) =:= {error, not_connected} end, 50),
    start_slapd(Dir),
    %% The engine reopens the connections (backoff at most 5 s, jittered:
    %% the workers come back at different times), this pool's and the
    %% suite's default pool's, which add_user uses.
    ok = wait_until(fun() -> all_connected(rs) andalso all_connected(default) end, 100),
    ?assertEqual(ok, call(rs, {simple_bind, [?ALICE, "alicepw"]})),
    ?assertEqual(ok, call(rs, {simple_bind, [?ALICE, "alicepw"]})),
    ?assertEqual(ok, add_user("after_restart", "x")),
    ?assertEqual(ok, call(rs, {delete, ["uid=after_restart," ++ ?PEOPLE]})).

%% The server closes the connection under a request (a proxy in front of
%% slapd cuts it): the request is retried once on a new connection, as
%% MongooseIM's worker does. When the new connection is cut too, the caller
%% hears not_connected.
closed_under_a_request(_Config) ->
    Proxy = mn_test_proxy:start(?PORT),
    {ok, _} = start(px, [{workers, 1}], #{port => mn_test_proxy:port(Proxy)}),
    Search = {search, [[{base, ?ALICE}, {scope, baseObject}, {filter, eldap:present("uid")}]]},
    ?assertMatch({ok, {eldap_search_result, [_], [], _}}, call(px, Search)),
    mn_test_proxy:set(Proxy, {cut_requests, 1}),
    ?assertMatch({ok, {eldap_search_result, [_], [], _}}, call(px, Search)),
    ?assertEqual({cut_requests, 0}, mn_test_proxy:mode(Proxy)),
    mn_test_proxy:set(Proxy, {cut_requests, 2}),
    ?assertEqual({error, not_connected}, call(px, Search)),
    ?assertEqual({cut_requests, 0}, mn_test_proxy:mode(Proxy)),
    ok = wait_until(fun() -> call(px, Search) =/= {error, not_connected} end, 100),
    ?assertMatch({ok, {eldap_search_result, [_], [], _}}, call(px, Search)),
    mn_test_proxy:stop(Proxy).

all_connected(Tag) ->
    [{workers, Workers}] = [W || {workers, _} = W <- mongoose_wpool:stats(ldap, global, Tag)],
    lists:all(fun({_, S}) -> proplists:get_value(connected, S) end, Workers).

wait_until(_F, 0) -> {error, gave_up};
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait_until(F, N - 1)
    end.

ldaps(Config) ->
    Dir = ?config(slapd, Config),
    Tls = fun(CA) -> #{verify_peer => true, cacertfile => filename:join(Dir, CA)} end,
    %% Seed 002's form: encrypt = "tls" and its TLS options; port 636 by default.
    {ok, _} = start(tls1, #{encrypt => <<"tls">>, port => ?LDAPS_PORT, tls => Tls("ca.pem")}),
    ?assertEqual(ok, call(tls1, {simple_bind, [?ALICE, "alicepw"]})),
    %% MongooseIM 6.x's: a tls section alone, and the name checked against localhost.
    {ok, _} = start(tls2, #{servers => ["localhost"], port => ?LDAPS_PORT, tls => Tls("ca.pem")}),
    ?assertMatch({ok, _}, call(tls2, {search, [[{base, ?ALICE}, {scope, baseObject},
                                                {filter, eldap:present("uid")}]]})),
    {error, {connect_failed, Wrong}} =
        start(tls3, #{encrypt => <<"tls">>, port => ?LDAPS_PORT, tls => Tls("other_ca.pem")}),
    ct:pal("wrong CA: ~s", [Wrong]),
    ?assertNotEqual(nomatch, binary:match(Wrong, <<"TLS handshake">>)),
    ?assertNotEqual(nomatch, binary:match(Wrong, <<"UnknownIssuer">>)),
    %% Seed 000's legacy tuple: encrypt tls, tls_options as ssl's options.
    LegacyConn = fun(CA) ->
                         [{servers, ["localhost"]}, {port, ?LDAPS_PORT}, {rootdn, ?ROOT},
                          {password, "secret"}, {encrypt, tls},
                          {tls_options, [{verify, verify_peer},
                                         {cacertfile, filename:join(Dir, CA)}]}]
                 end,
    Legacy = fun(Tag, Conn) ->
                     mongoose_wpool:start_configured_pools([{ldap, global, Tag, [{workers, 1}], Conn}], [])
             end,
    [{ok, _}] = Legacy(legacy1, LegacyConn("ca.pem")),
    ?assertEqual(ok, call(legacy1, {simple_bind, [?ALICE, "alicepw"]})),
    [{error, {connect_failed, WrongLegacy}}] = Legacy(legacy2, LegacyConn("other_ca.pem")),
    ?assertNotEqual(nomatch, binary:match(WrongLegacy, <<"UnknownIssuer">>)),
    ?assertEqual([{error, {invalid_config, <<"outgoing_pools.ldap.legacy3.connection: set tls or tls_options, not both">>}}],
                 Legacy(legacy3, [{tls, []} | LegacyConn("ca.pem")])),
    %% TLS to the plain port fails clearly too, within the connect timeout.
    {error, {connect_failed, Plain}} = start(tls4, #{encrypt => <<"tls">>, port => ?PORT}),
    ?assertNotEqual(nomatch, binary:match(Plain, <<"ldaps://127.0.0.1:13389">>)).

%% A server that accepts connections and never answers: the start fails
%% after the connect timeout with a clear error.
silent_server(_Config) ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {active, false}]),
    {ok, Port} = inet:port(L),
    Acceptor = spawn_link(fun() -> accept_forever(L, []) end),
    T0 = erlang:monotonic_time(millisecond),
    {error, {connect_failed, Msg}} = start(silent, [{workers, 1}], #{port => Port}),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ?assertNotEqual(nomatch, binary:match(Msg, <<"no connection and bind within 5s">>)),
    ?assert(Elapsed >= 4900 andalso Elapsed < 7000),
    unlink(Acceptor),
    exit(Acceptor, kill),
    gen_tcp:close(L).

accept_forever(L, Socks) ->
    case gen_tcp:accept(L) of
        {ok, S} -> accept_forever(L, [S | Socks]);
        _ -> ok
    end.

%% A server that stops answering mid-way (SIGSTOP): the call exits with
%% gen_server's timeout within call_timeout, and the pool recovers once
%% the server answers again.
stopped_server_times_out(Config) ->
    Dir = ?config(slapd, Config),
    {ok, _} = start(stop, [{workers, 1}, {call_timeout, 1000}], #{}),
    ok = call(stop, {simple_bind, [?ALICE, "alicepw"]}),
    os:cmd("kill -STOP " ++ slapd_pid(Dir)),
    T0 = erlang:monotonic_time(millisecond),
    ?assertExit({timeout, {mongoose_wpool, call, _}},
                call(stop, {search, [[{base, ?PEOPLE}, {filter, eldap:present("uid")}]]})),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    ?assert(Elapsed >= 1000 andalso Elapsed < 1500),
    os:cmd("kill -CONT " ++ slapd_pid(Dir)),
    ok = wait_until(fun() -> call(stop, {simple_bind, [?ALICE, "alicepw"]}) =:= ok end, 100),
    %% No late answer reached the mailbox.
    receive Late -> ct:fail({late_answer, Late}) after 100 -> ok end.
