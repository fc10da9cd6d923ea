%% `make demo': starts the pools of a TOML file, calls each, prints stats.
-module(mongoose_native_demo).
-export([run/1]).

run(TomlFile) ->
    ok = mongoose_wpool:ensure_started(),
    step("serving ~s on 127.0.0.1:18765 for the HTTP pool", [www(TomlFile)]),
    {ok, Httpd} = start_httpd(www(TomlFile)),
    step("reading ~s", [TomlFile]),
    {ok, Pools} = mongoose_native_config:pools_from_toml(TomlFile),
    [begin
         step("starting ~p pool ~p", [maps:get(type, P), maps:get(tag, P)]),
         {ok, _} = mongoose_wpool:start(P#{host_type => maps:get(scope, P),
                                           opts => maps:to_list(maps:get(opts, P))})
     end || P <- Pools],
    step("generic: erlang:system_info(otp_release) -> ~p",
         [mongoose_wpool:call(generic, global, demo, {erlang, system_info, [otp_release]})]),
    step("generic: 4 workers in turn -> ~p",
         [[mongoose_wpool:call(generic, global, demo, {erlang, self, []}) || _ <- lists:seq(1, 4)]]),
    step("http: GET hello.txt -> ~p",
         [mongoose_http_client:get(global, demo, <<"hello.txt">>, [])]),
    step("http: GET missing -> ~p",
         [element(1, element(2, mongoose_http_client:get(global, demo, <<"missing">>, [])))]),
    step("rdbms: SELECT 1 -> ~p", [mongoose_rdbms:sql_query(global, <<"SELECT 1">>)]),
    mongoose_rdbms:prepare(demo_add, demo, [a, b], <<"SELECT ?::int + ?::int">>),
    step("rdbms: prepared ? + ? with [20, 22] -> ~p",
         [mongoose_rdbms:execute(global, demo_add, [20, 22])]),
    step("rdbms: transaction -> ~p",
         [mongoose_rdbms:sql_transaction(global, fun() ->
              {selected, [{N}]} = mongoose_rdbms:sql_query_t(<<"SELECT count(*) FROM pg_tables">>),
              {tables, binary_to_integer(N)}
          end)]),
    step("redis: SET -> ~p", [mongoose_redis:cmd(["SET", "mongoose_native:demo", "hello"])]),
    step("redis: GET -> ~p", [mongoose_redis:cmd(["GET", "mongoose_native:demo"])]),
    step("redis: pipeline -> ~p", [mongoose_redis:cmds([["INCR", "mongoose_native:n"],
                                                        ["INCR", "mongoose_native:n"],
                                                        ["DEL", "mongoose_native:n"]])]),
    step("redis: 10,000 concurrent GETs", []),
    T0 = erlang:monotonic_time(microsecond),
    Self = self(),
    [spawn(fun() -> Self ! {done, mongoose_redis:cmd(["GET", "mongoose_native:demo"])} end)
     || _ <- lists:seq(1, 10000)],
    [receive {done, <<"hello">>} -> ok end || _ <- lists:seq(1, 10000)],
    Us = erlang:monotonic_time(microsecond) - T0,
    step("  done in ~.1f ms (~p GET/s)", [Us / 1000, round(10000 / (Us / 1000000))]),
    print_stats(redis, global, default),
    print_stats(generic, global, demo),
    mongoose_wpool:stop(),
    inets:stop(httpd, Httpd),
    step("all pools stopped", []).

www(TomlFile) ->
    filename:join(filename:dirname(filename:absname(TomlFile)), "www").

start_httpd(Root) ->
    ok = case inets:start() of ok -> ok; {error, {already_started, _}} -> ok end,
    inets:start(httpd, [{port, 18765}, {bind_address, {127, 0, 0, 1}}, {server_name, "demo"},
                        {server_root, Root}, {document_root, Root},
                        {modules, [mod_get]}]).

step(Fmt, Args) ->
    io:format("==> " ++ Fmt ++ "~n", Args).

print_stats(Type, Host, Tag) ->
    Stats = mongoose_wpool:stats(Type, Host, Tag),
    io:format("~n  ~s (~p workers, ~p)~n", [proplists:get_value(pool, Stats),
                                          proplists:get_value(size, Stats),
                                          proplists:get_value(strategy, Stats)]),
    io:format("  ~-8s ~-12s ~-10s ~s~n", ["worker", "queue_len", "in_flight", "connected"]),
    [io:format("  ~-8b ~-12b ~-10b ~p~n", [I, proplists:get_value(message_queue_len, W),
                                           proplists:get_value(in_flight, W),
                                           proplists:get_value(connected, W)])
     || {I, W} <- proplists:get_value(workers, Stats)],
    io:format("~n").
