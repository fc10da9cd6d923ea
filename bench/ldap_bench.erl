%% User-password binds per second at 16 callers on a 10-worker ldap pool
%% (the shared slapd of scripts/setup.sh, 127.0.0.1:3389), beside a plain
%% ldap3 client with no Erlang (native/core/examples/ldap3_binds.rs: 16
%% tasks over 10 connections) in the same run. Two forms of the bind:
%% eldap_pool:bind/3 (on a lease, released with a reset that binds back as
%% the root DN: two binds per check) and mongoose_wpool:call with
%% {simple_bind, ...} (one bind; the next other request binds back).
-module(ldap_bench).
-export([run/0]).

-define(DURATION_S, 3).
-define(CALLERS, 16).
-define(USER, "uid=alice,ou=people,dc=example,dc=com").

run() ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(ldap, global, bench, [{workers, 10}],
                                   #{servers => ["127.0.0.1"], port => 3389,
                                     rootdn => <<"cn=admin,dc=example,dc=com">>,
                                     password => <<"secret">>}),
    Lease = fun() -> ok = eldap_pool:bind({global, bench}, <<?USER>>, <<"alicepw">>) end,
    Call = fun() -> ok = mongoose_wpool:call(ldap, global, bench, {simple_bind, [?USER, "alicepw"]}) end,
    {LeaseOps, LP50, LP99} = measure(Lease),
    {CallOps, CP50, CP99} = measure(Call),
    mongoose_wpool:stop(ldap, global, bench),
    {Ref, RP50, RP99} = ldap3_binds(),
    io:format("~-44s ~9s ~8s ~8s~n", ["workload, 16 callers", "binds/s", "p50 us", "p99 us"]),
    [io:format("~-44s ~9b ~8b ~8b~n", Row)
     || Row <- [["eldap_pool:bind/3 (lease, reset binds back)", LeaseOps, LP50, LP99],
                ["mongoose_wpool:call simple_bind", CallOps, CP50, CP99],
                ["ldap3 alone, 10 connections", Ref, RP50, RP99]]],
    [{"ldap user bind (lease), 16 callers", LeaseOps, "binds/s", "ldap3, no Erlang", Ref},
     {"ldap user bind (call), 16 callers", CallOps, "binds/s", "ldap3, no Erlang", Ref}].

measure(F) ->
    Self = self(),
    Deadline = erlang:monotonic_time(millisecond) + ?DURATION_S * 1000,
    Pids = [spawn_link(fun() -> Self ! {self(), loop(F, Deadline, [])} end)
            || _ <- lists:seq(1, ?CALLERS)],
    Sorted = lists:sort(lists:append([receive {P, L} -> L end || P <- Pids])),
    N = length(Sorted),
    {N div ?DURATION_S, lists:nth(max(1, N div 2), Sorted), lists:nth(max(1, N * 99 div 100), Sorted)}.

loop(F, Deadline, Acc) ->
    T0 = erlang:monotonic_time(microsecond),
    F(),
    T1 = erlang:monotonic_time(microsecond),
    case T1 div 1000 >= Deadline of
        true -> [T1 - T0 | Acc];
        false -> loop(F, Deadline, [T1 - T0 | Acc])
    end.

ldap3_binds() ->
    Cmd = io_lib:format("cargo run -q --release -p mongoose_native --example ldap3_binds -- "
                        "ldap://127.0.0.1:3389 '~s' alicepw ~b 10 ~b 2>&1",
                        [?USER, ?CALLERS, ?DURATION_S]),
    Out = os:cmd(lists:flatten(Cmd)),
    case re:run(Out, "binds/s ([0-9]+) p50_us ([0-9]+) p99_us ([0-9]+)",
                [{capture, all_but_first, list}]) of
        {match, [Ops, P50, P99]} -> {list_to_integer(Ops), list_to_integer(P50), list_to_integer(P99)};
        nomatch -> io:format("ldap3_binds did not run: ~s~n", [Out]), {0, 0, 0}
    end.
