%% What the metrics cost: redis GETs from 128 callers on a 10-worker pool
%% (redis_bench's load), in rounds alternating without and with a
%% Prometheus scrape of the endpoint every second, all in one run; medians
%% of the rounds. The pool's counters are always kept, so the rounds
%% without a scrape include them too.
-module(metrics_bench).
-export([run/0, run/1]).

-define(DURATION_MS, 3000).
-define(CALLERS, 128).

run() -> run(5).

run(Rounds) ->
    %% The endpoint starts with the application: started again with it.
    _ = application:stop(mongoose_native),
    application:set_env(mongoose_native, metrics_listen, "127.0.0.1:0"),
    ok = mongoose_wpool:ensure_started(),
    {ok, Addr} = mongoose_native_metrics:listening(),
    {ok, _} = mongoose_wpool:start(redis, global, bench, [{workers, 10}], #{}),
    {ok, <<"OK">>} = call({q, [<<"SET">>, <<"bench:key">>, <<"value">>]}),
    io:format("~-26s ~5s ~9s ~8s ~8s ~8s~n",
              ["workload", "round", "ops/s", "p50 us", "p99 us", "scrapes"]),
    Results = [{round(R, false, Addr), round(R, true, Addr)} || R <- lists:seq(1, Rounds)],
    mongoose_wpool:stop(redis, global, bench),
    ok = application:stop(mongoose_native),
    application:unset_env(mongoose_native, metrics_listen),
    {Plain, Scraped} = lists:unzip(Results),
    Median = fun(L, I) -> median([element(I, X) || X <- L]) end,
    [io:format("~-26s ~5s ~9b ~8b ~8b~n", [Name, "med", Median(L, 1), Median(L, 2), Median(L, 3)])
     || {Name, L} <- [{"GET, not scraped", Plain}, {"GET, scraped every 1 s", Scraped}]],
    [{io_lib:format("redis GET, ~b callers, scraped", [?CALLERS]), Median(Scraped, 1), "ops/s",
      "not scraped, same run", Median(Plain, 1)}].

call(Req) -> mongoose_wpool:call(redis, global, bench, Req).

round(R, Scrape, Addr) ->
    Scraper = case Scrape of
                  true -> spawn_link(fun() -> scrape_every_second(Addr, 0) end);
                  false -> undefined
              end,
    Get = fun(_) -> {ok, _} = call({q, [<<"GET">>, <<"bench:key">>]}) end,
    {Ops, P50, P99} = bench_load:measure(?CALLERS, ?DURATION_MS, Get),
    Scrapes = case Scraper of
                  undefined -> 0;
                  Pid -> Pid ! {stop, self()}, receive {scrapes, N} -> N end
              end,
    io:format("~-26s ~5b ~9b ~8b ~8b ~8b~n",
              [case Scrape of true -> "GET, scraped every 1 s"; false -> "GET, not scraped" end,
               R, Ops, P50, P99, Scrapes]),
    {Ops, P50, P99}.

scrape_every_second(Addr, N) ->
    ok = scrape(Addr),
    receive {stop, From} -> From ! {scrapes, N + 1}
    after 1000 -> scrape_every_second(Addr, N + 1)
    end.

scrape(Addr) ->
    [Host, Port] = string:split(binary_to_list(Addr), ":", trailing),
    {ok, S} = gen_tcp:connect(Host, list_to_integer(Port), [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n">>),
    {ok, <<"HTTP/1.1 200 OK", _/binary>>} = read_all(S, <<>>),
    ok.

read_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 5000) of
        {ok, Data} -> read_all(S, <<Acc/binary, Data/binary>>);
        {error, closed} -> {ok, Acc}
    end.

median(L) ->
    lists:nth((length(L) + 1) div 2, lists:sort(L)).
