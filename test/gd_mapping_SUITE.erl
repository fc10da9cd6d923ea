%% mod_global_distrib_mapping end to end through the NIF, against the Redis
%% on 127.0.0.1:6379 (database 10, flushed before each case): the stored
%% keys, types and TTLs byte for byte (CONTRACTS.md section 3), the refresh,
%% delete-only-if-ours, the cache, the metrics, the options and the hooks.
-module(gd_mapping_SUITE).
-compile([export_all, nowarn_export_all, {no_auto_import, [get/1]}]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(DB, 10).
-define(GLOBAL, <<"global.test">>).
-define(LOCAL, <<"dc1.test">>).

all() ->
    [start_writes_node_entries, jid_keys, jid_record_and_bare_lookup, delete_only_if_ours,
     domains, endpoints_and_hosts, refresh_extends_and_cleans, periodic_refresh,
     cache_lifetime, cache_missed_on, cache_missed_off, max_jids, metrics,
     invalid_options, check_host_failed, pool_not_started, hooks, not_started].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    application:set_env(mongoose_native, hosts, [?GLOBAL, ?LOCAL, <<"other.test">>]),
    Config.

end_per_suite(_Config) ->
    application:unset_env(mongoose_native, hosts),
    ok.

init_per_testcase(_, Config) ->
    {ok, _} = mongoose_wpool:start(redis, global, global_distrib, [{workers, 4}],
                                   #{database => ?DB}),
    {ok, <<"OK">>} = q([<<"FLUSHDB">>]),
    Config.

end_per_testcase(_, _Config) ->
    mod_global_distrib_mapping:stop(?GLOBAL),
    mongoose_wpool:stop(redis, global, global_distrib),
    ok.

opts() ->
    opts(#{}).

opts(Extra) ->
    maps:merge(#{global_host => ?GLOBAL, local_host => ?LOCAL,
                 connections => #{advertised_endpoints => [{"10.1.2.3", 5555},
                                                           {"dc1.example.com", 5556}]}},
               Extra).

start() -> start(#{}).

start(Extra) ->
    ok = mod_global_distrib_mapping:start(?GLOBAL, opts(Extra)).

q(Cmd) -> mongoose_wpool:call(redis, global, global_distrib, {q, Cmd}).

get(Key) -> {ok, V} = q([<<"GET">>, Key]), V.
type(Key) -> {ok, T} = q([<<"TYPE">>, Key]), T.
ttl(Key) -> {ok, T} = q([<<"TTL">>, Key]), binary_to_integer(T).
members(Key) -> {ok, M} = q([<<"SMEMBERS">>, Key]), lists:sort(M).
node_bin() -> atom_to_binary(node(), latin1).
key(Kind) -> <<?LOCAL/binary, "#", (node_bin())/binary, "#{", Kind/binary, "}">>.
nodes_key() -> <<?LOCAL/binary, "#{nodes}">>.

assert_ttl(Key, Expire) ->
    T = ttl(Key),
    ?assert(T =< Expire andalso T >= Expire - 2, {Key, T}).

metric(Name) ->
    {ok, M} = mod_global_distrib_mapping:metrics(),
    maps:get(Name, M).

%%--------------------------------------------------------------------

start_writes_node_entries(_Config) ->
    start(),
    ?assertEqual([?LOCAL], members(<<"hosts">>)),
    ?assertEqual(<<"hash">>, type(nodes_key())),
    {ok, [Node, Stamp]} = q([<<"HGETALL">>, nodes_key()]),
    ?assertEqual(node_bin(), Node),
    ?assert(abs(binary_to_integer(Stamp) - erlang:system_time(second)) =< 2),
    ?assertEqual(<<"set">>, type(key(<<"endpoints">>))),
    ?assertEqual([<<"10.1.2.3#5555">>, <<"dc1.example.com#5556">>], members(key(<<"endpoints">>))),
    assert_ttl(key(<<"endpoints">>), 120).

jid_keys(_Config) ->
    start(#{redis => #{expire_after => 30}}),
    ok = mod_global_distrib_mapping:insert_for_jid({<<"alice">>, ?GLOBAL, <<"phone">>}),
    [begin
         ?assertEqual(<<"string">>, type(K)),
         ?assertEqual(?LOCAL, get(K)),
         assert_ttl(K, 30)
     end || K <- [<<"alice@global.test/phone">>, <<"alice@global.test">>]],
    {ok, Keys} = q([<<"KEYS">>, <<"alice*">>]),
    ?assertEqual(2, length(Keys)),
    ?assertEqual({ok, ?LOCAL}, mod_global_distrib_mapping:for_jid({<<"alice">>, ?GLOBAL, <<"phone">>})),
    ok = mod_global_distrib_mapping:insert_for_jid({<<"bare">>, ?GLOBAL, <<>>}),
    {ok, BareKeys} = q([<<"KEYS">>, <<"bare*">>]),
    ?assertEqual([<<"bare@global.test">>], BareKeys).

jid_record_and_bare_lookup(_Config) ->
    start(),
    %% MongooseIM's #jid{} record: the lower-cased fields are the key.
    Jid = {jid, <<"Bob">>, <<"GLOBAL.test">>, <<"Res">>, <<"bob">>, ?GLOBAL, <<"Res">>},
    ok = mod_global_distrib_mapping:insert_for_jid(Jid),
    ?assertEqual(?LOCAL, get(<<"bob@global.test/Res">>)),
    ?assertEqual({ok, ?LOCAL}, mod_global_distrib_mapping:for_jid(Jid)),
    %% Unknown full JID, known bare JID: the bare JID answers.
    {ok, _} = q([<<"SET">>, <<"carol@global.test">>, <<"dc2.test">>]),
    ?assertEqual({ok, <<"dc2.test">>},
                 mod_global_distrib_mapping:for_jid({<<"Carol">>, <<"Global.Test">>, <<"laptop">>})),
    ?assertEqual(error, mod_global_distrib_mapping:for_jid({<<"nobody">>, ?GLOBAL, <<"r">>})).

delete_only_if_ours(_Config) ->
    start(),
    Mine = {<<"dave">>, ?GLOBAL, <<"a">>},
    Theirs = {<<"erin">>, ?GLOBAL, <<"b">>},
    ok = mod_global_distrib_mapping:insert_for_jid(Mine),
    ok = mod_global_distrib_mapping:insert_for_jid(Theirs),
    [{ok, _} = q([<<"SET">>, K, <<"dc2.test">>]) || K <- [<<"erin@global.test/b">>, <<"erin@global.test">>]],
    ok = mod_global_distrib_mapping:delete_for_jid(Mine),
    ok = mod_global_distrib_mapping:delete_for_jid(Theirs),
    ?assertEqual({ok, <<"0">>}, q([<<"EXISTS">>, <<"dave@global.test/a">>, <<"dave@global.test">>])),
    ?assertEqual(<<"dc2.test">>, get(<<"erin@global.test/b">>)),
    ?assertEqual(<<"dc2.test">>, get(<<"erin@global.test">>)),
    %% The deleted session is not refreshed back.
    {ok, #{jids := 0}} = mod_global_distrib_mapping:refresh(),
    ?assertEqual(undefined, get(<<"dave@global.test/a">>)),
    {ok, _} = q([<<"SET">>, <<"theirs.global.test">>, <<"dc2.test">>]),
    ok = mod_global_distrib_mapping:delete_for_domain(<<"theirs.global.test">>),
    ?assertEqual(<<"dc2.test">>, get(<<"theirs.global.test">>)).

domains(_Config) ->
    start(),
    ok = mod_global_distrib_mapping:insert_for_domain(<<"muc.global.test">>),
    ok = mod_global_distrib_mapping:insert_for_domain(<<"hidden.global.test">>, true),
    ok = mod_global_distrib_mapping:insert_for_domain(<<"pubsub.global.test">>, <<"dc9.test">>, false),
    All = [<<"hidden.global.test">>, <<"muc.global.test">>, <<"pubsub.global.test">>],
    ?assertEqual(All, members(key(<<"domains">>))),
    ?assertEqual([<<"muc.global.test">>, <<"pubsub.global.test">>],
                 members(key(<<"public_domains">>))),
    [begin
         ?assertEqual(<<"string">>, type(D)),
         ?assertEqual(?LOCAL, get(D)),
         assert_ttl(D, 120)
     end || D <- All],
    ?assertEqual(All, lists:sort(mod_global_distrib_mapping:all_domains())),
    ?assertEqual([<<"muc.global.test">>, <<"pubsub.global.test">>],
                 lists:sort(mod_global_distrib_mapping:public_domains())),
    %% insert_for_domain/3 caches the host it was given.
    ?assertEqual({ok, <<"dc9.test">>}, mod_global_distrib_mapping:for_domain(<<"pubsub.global.test">>)),
    ok = mod_global_distrib_mapping:cache_domain(<<"remote.test">>, <<"dc2.test">>),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_domain(<<"remote.test">>)),
    ?assertEqual(undefined, get(<<"remote.test">>)),
    ok = mod_global_distrib_mapping:delete_for_domain(<<"hidden.global.test">>),
    ?assertEqual(undefined, get(<<"hidden.global.test">>)),
    ?assertEqual(error, mod_global_distrib_mapping:for_domain(<<"hidden.global.test">>)),
    ?assertEqual([<<"muc.global.test">>, <<"pubsub.global.test">>], members(key(<<"domains">>))).

endpoints_and_hosts(_Config) ->
    start(),
    ?assertEqual([{{10, 1, 2, 3}, 5555}, {"dc1.example.com", 5556}],
                 mod_global_distrib_mapping:endpoints(?LOCAL)),
    ?assertEqual([], mod_global_distrib_mapping:endpoints(<<"unknown.test">>)),
    {ok, _} = q([<<"SADD">>, <<"hosts">>, <<"dc2.test">>]),
    ?assertEqual([?LOCAL, <<"dc2.test">>], mod_global_distrib_mapping:hosts()).

refresh_extends_and_cleans(_Config) ->
    start(),
    ok = mod_global_distrib_mapping:insert_for_jid({<<"frank">>, ?GLOBAL, <<"r">>}),
    ok = mod_global_distrib_mapping:insert_for_domain(<<"svc.global.test">>),
    [{ok, _} = q([<<"EXPIRE">>, K, 5]) || K <- [<<"frank@global.test/r">>, <<"frank@global.test">>,
                                                <<"svc.global.test">>]],
    [{ok, _} = q([<<"SADD">>, key(K), <<"stale#1">>]) || K <- [<<"endpoints">>, <<"domains">>,
                                                              <<"public_domains">>]],
    Now = erlang:system_time(second),
    {ok, _} = q([<<"HSET">>, nodes_key(), <<"dead@host">>, Now - 121]),
    {ok, _} = q([<<"HSET">>, nodes_key(), <<"live@host">>, Now - 10]),
    %% Another datacenter took over a session meanwhile: it keeps it.
    ok = mod_global_distrib_mapping:insert_for_jid({<<"moved">>, ?GLOBAL, <<>>}),
    {ok, _} = q([<<"SET">>, <<"moved@global.test">>, <<"dc2.test">>]),
    {ok, Report} = mod_global_distrib_mapping:refresh(),
    ?assertMatch(#{jids := 2, skipped := 1, domains := 1, expired_nodes := [<<"dead@host">>],
                   round_trips := 3}, Report),
    [assert_ttl(K, 120) || K <- [<<"frank@global.test/r">>, <<"frank@global.test">>,
                                 <<"svc.global.test">>, key(<<"endpoints">>), key(<<"domains">>),
                                 key(<<"public_domains">>)]],
    ?assertEqual(<<"dc2.test">>, get(<<"moved@global.test">>)),
    ?assertEqual([<<"10.1.2.3#5555">>, <<"dc1.example.com#5556">>], members(key(<<"endpoints">>))),
    ?assertEqual([<<"svc.global.test">>], members(key(<<"domains">>))),
    ?assertEqual([<<"svc.global.test">>], members(key(<<"public_domains">>))),
    {ok, Nodes} = q([<<"HKEYS">>, nodes_key()]),
    ?assertEqual(lists:sort([node_bin(), <<"live@host">>]), lists:sort(Nodes)).

periodic_refresh(_Config) ->
    start(#{redis => #{refresh_after => 1, expire_after => 60}}),
    ok = mod_global_distrib_mapping:insert_for_jid({<<"gina">>, ?GLOBAL, <<>>}),
    {ok, _} = q([<<"EXPIRE">>, <<"gina@global.test">>, 5]),
    {ok, _} = q([<<"DEL">>, <<"hosts">>]),
    timer:sleep(1600),
    assert_ttl(<<"gina@global.test">>, 60),
    ?assertEqual([?LOCAL], members(<<"hosts">>)).

cache_lifetime(_Config) ->
    start(#{cache => #{jid_lifetime_seconds => 1, domain_lifetime_seconds => 2}}),
    Jid = {<<"hank">>, ?GLOBAL, <<>>},
    ok = mod_global_distrib_mapping:insert_for_jid(Jid),
    ok = mod_global_distrib_mapping:insert_for_domain(<<"d.global.test">>),
    {ok, _} = q([<<"SET">>, <<"hank@global.test">>, <<"dc2.test">>]),
    {ok, _} = q([<<"SET">>, <<"d.global.test">>, <<"dc2.test">>]),
    ?assertEqual({ok, ?LOCAL}, mod_global_distrib_mapping:for_jid(Jid)),
    ?assertEqual({ok, ?LOCAL}, mod_global_distrib_mapping:for_domain(<<"d.global.test">>)),
    timer:sleep(1200),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_jid(Jid)),
    ?assertEqual({ok, ?LOCAL}, mod_global_distrib_mapping:for_domain(<<"d.global.test">>)),
    timer:sleep(1000),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_domain(<<"d.global.test">>)),
    %% clear_cache: a global-host JID's entries, else the sender's domain.
    ok = mod_global_distrib_mapping:cache_jid(Jid, <<"dc3.test">>),
    ?assertEqual({ok, <<"dc3.test">>}, mod_global_distrib_mapping:for_jid(Jid)),
    ok = mod_global_distrib_mapping:clear_cache({jid, <<"hank">>, ?GLOBAL, <<>>, <<"hank">>, ?GLOBAL, <<>>}),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_jid(Jid)),
    ok = mod_global_distrib_mapping:cache_domain(<<"d.global.test">>, <<"dc3.test">>),
    ok = mod_global_distrib_mapping:clear_cache({<<>>, <<"d.global.test">>, <<>>}),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_domain(<<"d.global.test">>)).

cache_missed_on(_Config) ->
    start(),
    Jid = {<<"ivan">>, ?GLOBAL, <<>>},
    ?assertEqual(error, mod_global_distrib_mapping:for_jid(Jid)),
    {ok, _} = q([<<"SET">>, <<"ivan@global.test">>, <<"dc2.test">>]),
    ?assertEqual(error, mod_global_distrib_mapping:for_jid(Jid)),
    ?assertEqual(1, metric(mod_global_distrib_mapping_cache_misses_count)).

cache_missed_off(_Config) ->
    start(#{cache => #{cache_missed => false}}),
    Jid = {<<"ivan">>, ?GLOBAL, <<>>},
    ?assertEqual(error, mod_global_distrib_mapping:for_jid(Jid)),
    {ok, _} = q([<<"SET">>, <<"ivan@global.test">>, <<"dc2.test">>]),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_jid(Jid)),
    ?assertEqual(2, metric(mod_global_distrib_mapping_cache_misses_count)).

max_jids(_Config) ->
    start(#{cache => #{max_jids => 20}}),
    [ok = mod_global_distrib_mapping:cache_jid({integer_to_binary(I), ?GLOBAL, <<>>}, <<"dc2.test">>)
     || I <- lists:seq(1, 500)],
    {ok, #{jids := N}} = mod_global_distrib_mapping:cache_sizes(),
    ?assert(N =< 20, N).

metrics(_Config) ->
    start(),
    ok = mod_global_distrib_mapping:insert_for_jid({<<"jack">>, ?GLOBAL, <<"r">>}),
    {ok, ?LOCAL} = mod_global_distrib_mapping:for_jid({<<"jack">>, ?GLOBAL, <<"r">>}),
    error = mod_global_distrib_mapping:for_jid({<<"kate">>, ?GLOBAL, <<"r">>}),
    error = mod_global_distrib_mapping:for_domain(<<"none.test">>),
    error = mod_global_distrib_mapping:for_domain(<<"none.test">>),
    ?assertEqual(4, metric(mod_global_distrib_mapping_fetches_count)),
    %% kate: full then bare JID; none.test once (then a cached miss).
    ?assertEqual(3, metric(mod_global_distrib_mapping_cache_misses_count)),
    Time = metric(mod_global_distrib_mapping_fetches_time),
    ?assertMatch(#{count := 4, min := _, max := _, mean := _, median := _, 99 := _}, Time),
    ?assert(maps:get(max, Time) >= maps:get(min, Time)).

invalid_options(_Config) ->
    Check = fun(Extra, Expected) ->
                    {error, {invalid_config, Msg}} = mod_global_distrib_mapping:start(?GLOBAL, opts(Extra)),
                    ?assertEqual(Expected, Msg)
            end,
    Check(#{bogus => 1},
          <<"modules.mod_global_distrib.bogus: unknown option; expected one of global_host, "
            "local_host, message_ttl, hosts_refresh_interval, connections, redis, cache, bounce">>),
    Check(#{cache => #{max_jids => -1}},
          <<"modules.mod_global_distrib.cache.max_jids: expected a non-negative integer, got -1">>),
    Check(#{cache => #{jid_lifetime_seconds => <<"5">>}},
          <<"modules.mod_global_distrib.cache.jid_lifetime_seconds: expected a non-negative "
            "integer, got <<\"5\">>">>),
    Check(#{redis => #{expire_after => 0}},
          <<"modules.mod_global_distrib.redis.expire_after: expected a positive integer, got 0">>),
    Check(#{cache => #{cache_missed => maybe}},
          <<"modules.mod_global_distrib.cache.cache_missed: expected a boolean, got maybe">>),
    Check(#{bounce => #{max_retries => -3}},
          <<"modules.mod_global_distrib.bounce.max_retries: expected a non-negative integer, got -3">>),
    Check(#{connections => #{endpoints => [{"h", 70000}]}},
          <<"modules.mod_global_distrib.connections.endpoints[0].port: expected an integer "
            "between 1 and 65535, got 70000">>),
    {error, {invalid_config, _}} = mod_global_distrib_mapping:start(?GLOBAL, #{local_host => ?LOCAL}),
    %% Nothing was started by any of these.
    ?assertEqual(error, mod_global_distrib_mapping:for_domain(<<"x.test">>)).

check_host_failed(_Config) ->
    {error, {check_host_failed, Msg}} =
        mod_global_distrib_mapping:start(?GLOBAL, opts(#{local_host => <<"unserved.test">>})),
    ?assertMatch({_, _}, binary:match(Msg, <<"local_host: unserved.test is not a member">>)),
    {error, {check_host_failed, _}} =
        mod_global_distrib_mapping:start(?GLOBAL, opts(#{global_host => <<"nope.test">>})).

pool_not_started(_Config) ->
    {error, {pool_not_started, Msg}} =
        mod_global_distrib_mapping:start(?GLOBAL, opts(#{redis => #{pool => no_such_pool}})),
    ?assertMatch({_, _}, binary:match(Msg, <<"no_such_pool">>)).

hooks(_Config) ->
    start(),
    Registered = mod_global_distrib_adapter:registered_hooks(),
    ?assertEqual(5, length(Registered)),
    ?assert(lists:keymember(sm_register_connection_hook, 1, Registered)),
    Acc = #{},
    Jid = {jid, <<"Lena">>, ?GLOBAL, <<"web">>, <<"lena">>, ?GLOBAL, <<"web">>},
    {ok, Acc} = mod_global_distrib_mapping:session_opened(Acc, #{jid => Jid}, #{}),
    ?assertEqual(?LOCAL, get(<<"lena@global.test/web">>)),
    {ok, Acc} = mod_global_distrib_mapping:session_closed(Acc, #{jid => Jid}, #{}),
    ?assertEqual(undefined, get(<<"lena@global.test/web">>)),
    %% Subdomains of the global host only.
    {ok, ok} = mod_global_distrib_mapping:register_subhost(
                 undefined, #{ldomain => <<"comp.global.test">>, is_hidden => true}, #{}),
    {ok, ok} = mod_global_distrib_mapping:register_subhost(
                 undefined, #{ldomain => <<"comp.other.test">>, is_hidden => false}, #{}),
    ?assertEqual([<<"comp.global.test">>], members(key(<<"domains">>))),
    ?assertEqual([], members(key(<<"public_domains">>))),
    {ok, ok} = mod_global_distrib_mapping:unregister_subhost(
                 undefined, #{ldomain => <<"comp.global.test">>}, #{}),
    ?assertEqual([], members(key(<<"domains">>))),
    %% A packet from another datacenter teaches the cache its origin.
    Origin = #{{global_distrib, origin} => <<"dc2.test">>},
    From = {jid, <<"max">>, ?GLOBAL, <<"r">>, <<"max">>, ?GLOBAL, <<"r">>},
    {ok, Origin} = mod_global_distrib_mapping:packet_to_component(Origin, #{from => From}, #{}),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_jid(From)),
    ?assertEqual(undefined, get(<<"max@global.test/r">>)),
    Comp = {<<>>, <<"svc.other.test">>, <<>>},
    {ok, _} = mod_global_distrib_mapping:packet_to_component(Origin, #{from => Comp}, #{}),
    ?assertEqual({ok, <<"dc2.test">>}, mod_global_distrib_mapping:for_domain(<<"svc.other.test">>)),
    ok = mod_global_distrib_mapping:stop(?GLOBAL),
    ?assertEqual([], mod_global_distrib_adapter:registered_hooks()).

not_started(_Config) ->
    ?assertEqual(error, mod_global_distrib_mapping:for_jid({<<"a">>, ?GLOBAL, <<>>})),
    ?assertEqual(ok, mod_global_distrib_mapping:insert_for_jid({<<"a">>, ?GLOBAL, <<>>})),
    ?assertMatch({error, {not_started, _}}, mod_global_distrib_mapping:metrics()),
    ?assertError({mod_global_distrib_mapping, hosts, {not_started, _}},
                 mod_global_distrib_mapping:hosts()),
    start(),
    ?assertError({badarg, _}, mod_global_distrib_mapping:for_jid({<<"a">>, <<>>, <<>>})).
