%% mod_global_distrib_mapping's refresh of 100,000 local sessions (200,000
%% keys: full and bare JIDs), pipelined in the NIF, beside a refresh that
%% sends one command per key and waits for its answer (what stock
%% MongooseIM's refresher does) over the same pool, keys and Redis, in the
%% same run. Prints numbers only.
-module(gd_refresh_bench).
-export([run/0, run/1]).

-define(GLOBAL, <<"bench-global.test">>).
-define(LOCAL, <<"bench-dc1.test">>).
-define(DB, 10).

run() -> run(100000).

run(Sessions) ->
    ok = mongoose_wpool:ensure_started(),
    application:set_env(mongoose_native, hosts, [?GLOBAL, ?LOCAL]),
    {ok, _} = mongoose_wpool:start(redis, global, gd_bench, [{workers, 10}], #{database => ?DB}),
    ok = mod_global_distrib_mapping:start(?GLOBAL, #{global_host => ?GLOBAL, local_host => ?LOCAL,
                                                     redis => #{pool => gd_bench,
                                                                refresh_after => 3600}}),
    try
        Jids = [{<<"user", (integer_to_binary(I))/binary>>, ?GLOBAL, <<"res">>}
                || I <- lists:seq(1, Sessions)],
        {InsertUs, ok} = timer:tc(fun() -> insert_all(Jids, 100) end),
        Keys = lists:append([[<<U/binary, "@", S/binary, "/", R/binary>>, <<U/binary, "@", S/binary>>]
                             || {U, S, R} <- Jids]),
        Runs = [begin
                    {Us, {ok, Report}} = timer:tc(fun mod_global_distrib_mapping:refresh/0),
                    {Us, Report}
                end || _ <- lists:seq(1, 3)],
        {PipeUs, #{jids := Written, round_trips := Trips}} = lists:min(Runs),
        {SeqUs, ok} = timer:tc(fun() -> one_by_one(Keys) end),
        io:format("~b sessions inserted through insert_for_jid/1 (100 callers) in ~b ms~n",
                  [Sessions, InsertUs div 1000]),
        io:format("~-44s ~8s ~8s ~12s ~10s~n", ["refresh of the same keys", "keys", "ms",
                                                "round trips", "keys/s"]),
        io:format("~-44s ~8b ~8b ~12b ~10b~n", ["pipelined in the NIF (best of 3)",
                                                 Written, PipeUs div 1000, Trips,
                                                 rate(Written, PipeUs)]),
        io:format("~-44s ~8b ~8b ~12b ~10b~n", ["one round trip per key (SET ... EX)",
                                                 length(Keys), SeqUs div 1000, length(Keys),
                                                 rate(length(Keys), SeqUs)]),
        io:format("speedup: ~.1fx~n", [SeqUs / max(PipeUs, 1)]),
        [{io_lib:format("gd refresh, ~b sessions", [Sessions]), rate(Written, PipeUs), "keys/s",
          "one round trip per key", rate(length(Keys), SeqUs)}]
    after
        mod_global_distrib_mapping:stop(?GLOBAL),
        mongoose_wpool:stop(redis, global, gd_bench)
    end.

rate(N, Us) -> round(N * 1000000 / max(Us, 1)).

insert_all(Jids, Callers) ->
    Self = self(),
    Chunks = chunks(Jids, max(1, length(Jids) div Callers)),
    Pids = [spawn_link(fun() ->
                               [ok = mod_global_distrib_mapping:insert_for_jid(J) || J <- Chunk],
                               Self ! {self(), done}
                       end) || Chunk <- Chunks],
    [receive {P, done} -> ok end || P <- Pids],
    ok.

chunks([], _) -> [];
chunks(L, N) when length(L) =< N -> [L];
chunks(L, N) ->
    {H, T} = lists:split(N, L),
    [H | chunks(T, N)].

one_by_one(Keys) ->
    [{ok, <<"OK">>} = mongoose_wpool:call(redis, global, gd_bench,
                                          {q, [<<"SET">>, K, ?LOCAL, <<"EX">>, <<"120">>]})
     || K <- Keys],
    ok.
