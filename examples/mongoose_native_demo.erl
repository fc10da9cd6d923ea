%% `make demo': starts the pools of a TOML file, calls each, prints stats.
-module(mongoose_native_demo).
-export([run/1, prepared_queries/0]).

run(TomlFile) ->
    ok = mongoose_wpool:ensure_started(),
    step("serving ~s on 127.0.0.1:18765 for the HTTP pool", [www(TomlFile)]),
    {ok, Httpd} = start_httpd(www(TomlFile)),
    step("reading ~s", [TomlFile]),
    {ok, Pools0} = mongoose_native_config:pools_from_toml(TomlFile),
    Root = filename:dirname(filename:dirname(filename:absname(TomlFile))),
    %% No Riak, Cassandra or Elasticsearch runs here: the suites' protocol
    %% test servers stand in, on the ports demo_pools.toml gives.
    Servers = [{Type, test_server(Root, Type, Script, Args)}
               || {Type, Script, Args} <-
                      [{riak, "riak_server.py", ["--port", "18087", "--datatype", "users=map"]},
                       {cassandra, "cql_server.py",
                        ["--port", "19042", "--keyspace", "mongooseim",
                         "--schema", filename:join(Root, "examples/demo_cassandra.cql")]},
                       {elastic, "es_server.py", ["--port", "19200"]}]],
    Pools = [P || P <- Pools0, proplists:get_value(maps:get(type, P), Servers) =/= skipped],
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
    Alice = <<"uid=alice,ou=people,dc=example,dc=com">>,
    step("ldap: bind as alice -> ~p", [eldap_pool:bind({global, demo}, Alice, <<"alicepw">>)]),
    step("ldap: bind with a wrong password -> ~p",
         [eldap_pool:bind({global, demo}, Alice, <<"wrong">>)]),
    step("ldap: search uid=bob -> ~p",
         [mongoose_wpool:call(ldap, global, demo,
                              {search, [[{base, "ou=people,dc=example,dc=com"},
                                         {filter, eldap:equalityMatch("uid", "bob")},
                                         {attributes, ["cn", "mail"]}]]})]),
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
    rabbit(),
    [Demo() || {Type, Demo} <- [{riak, fun riak/0}, {cassandra, fun cassandra/0},
                                {elastic, fun elastic/0}],
               proplists:get_value(Type, Servers) =/= skipped],
    print_stats(redis, global, default),
    print_stats(generic, global, demo),
    mongoose_wpool:stop(),
    inets:stop(httpd, Httpd),
    step("all pools stopped", []),
    datacenters(),
    [port_close(Port) || {_, Port} <- Servers, Port =/= skipped],
    ok.

%% mod_event_pusher_rabbit's calls, and the message read back from a queue.
rabbit() ->
    Call = fun(Req) -> mongoose_wpool:call(rabbit, global, event_pusher, Req) end,
    step("rabbit: exchange.declare -> ~p",
         [Call({amqp_call, mongoose_amqp:exchange_declare(<<"mn.demo">>, <<"fanout">>)})]),
    step("rabbit: queue.declare -> ~p",
         [Call({amqp_call, {'queue.declare', 0, <<"mn.demo">>, false, false, false, true, false, []}})]),
    {ok, _} = Call({amqp_call, {'queue.bind', 0, <<"mn.demo">>, <<"mn.demo">>, <<>>, false, []}}),
    step("rabbit: publish (confirmed) -> ~p",
         [Call({amqp_publish, mongoose_amqp:basic_publish(<<"mn.demo">>, <<>>),
                mongoose_amqp:message(<<"hello from the demo">>)})]),
    {ok, {_GetOk, {amqp_msg, _, Body}}} = Call({amqp_call, {'basic.get', 0, <<"mn.demo">>, true}}),
    step("rabbit: basic.get -> ~p", [Body]),
    print_stats(rabbit, global, event_pusher).

%% Starts test/servers/Script with the Python of scripts/setup.sh's
%% virtualenv, or answers `skipped' (the pool is then left out).
test_server(Root, Type, Script, Args) ->
    Venv = case os:getenv("MN_VENV") of false -> "/var/cache/mongoose_native/venv"; V -> V end,
    Python = filename:join(Venv, "bin/python"),
    Path = filename:join([Root, "test", "servers", Script]),
    case filelib:is_regular(Python) andalso filelib:is_regular(Path) of
        false ->
            step("~p: skipped, no test server (~s and ~s are needed: run scripts/setup.sh)",
                 [Type, Python, Path]),
            skipped;
        true ->
            step("~p: starting ~s (no such server runs here)", [Type, Script]),
            Port = open_port({spawn_executable, Python}, [{args, [Path | Args]}, {line, 200}, binary]),
            receive
                {Port, {data, {eol, <<"PORT ", _/binary>>}}} -> Port
            after 10000 ->
                    step("~p: skipped, the test server did not start", [Type]),
                    port_close(Port),
                    skipped
            end
    end.

%% mongoose_riak's calls, as MongooseIM 5.1.0's modules make them.
riak() ->
    B = {<<"users">>, <<"demo.example">>},
    Obj = {riakc_obj, {<<"last">>, <<"demo.example">>}, <<"alice">>, undefined, [], undefined,
           <<"away">>},
    step("riak: put riakc_obj -> ~p", [mongoose_riak:put(Obj)]),
    {ok, Got} = mongoose_riak:get({<<"last">>, <<"demo.example">>}, <<"alice">>),
    step("riak: get -> contents ~p", [[V || {_MD, V} <- element(5, Got)]]),
    step("riak: get missing -> ~p", [mongoose_riak:get(<<"last">>, <<"nobody">>)]),
    Map = mongoose_riak:create_new_map([{{<<"password">>, register},
                                         fun({register, V, _}) -> {register, V, <<"s3cret">>} end}]),
    %% What riakc_map:to_op(Map) gives (riakc is not loaded here).
    {map, _, [{Field, _}], _, _} = Map,
    Op = {map, {update, [{update, Field, {assign, <<"s3cret">>}}]}, undefined},
    step("riak: update_type map -> ~p", [mongoose_riak:update_type(B, <<"alice">>, Op)]),
    step("riak: fetch_type map -> ~p", [mongoose_riak:fetch_type(B, <<"alice">>)]),
    step("riak: list_keys -> ~p", [mongoose_riak:list_keys({<<"last">>, <<"demo.example">>})]),
    print_stats(riak, global, default).

%% The queries of the cassandra steps, declared as MongooseIM's modules do.
prepared_queries() ->
    [{insert, "INSERT INTO mam_message (id, user_jid, with_jid, from_jid, message) "
              "VALUES (?, ?, ?, ?, ?)"},
     {fetch, "SELECT id, message FROM mam_message WHERE user_jid = ? AND with_jid = ? ORDER BY id"}].

cassandra() ->
    Rows = [#{id => I, user_jid => <<"alice@demo">>, with_jid => <<"bob@demo">>,
              from_jid => <<"alice@demo/phone">>, message => <<"message ", (integer_to_binary(I))/binary>>}
            || I <- lists:seq(1, 250)],
    step("cassandra: cql_write of 250 rows (batches of 20) -> ~p",
         [mongoose_cassandra:cql_write(default, <<"alice@demo">>, ?MODULE, insert, Rows)]),
    Params = #{user_jid => <<"alice@demo">>, with_jid => <<"bob@demo">>},
    {ok, Read} = mongoose_cassandra:cql_read(default, <<"alice@demo">>, ?MODULE, fetch, Params),
    step("cassandra: cql_read -> ~b rows, the first ~p", [length(Read), hd(Read)]),
    step("cassandra: cql_foldl, page sizes -> ~w",
         [mongoose_cassandra:cql_foldl(default, <<"alice@demo">>, ?MODULE, fetch, Params,
                                       fun(Page, Acc) -> Acc ++ [length(Page)] end, [])]),
    step("cassandra: test_query -> ~p", [mongoose_cassandra:test_query(default)]),
    step("cassandra: session -> ~p",
         [proplists:get_value(cassandra, mongoose_wpool:stats(cassandra, global, default))]).

%% mongoose_elasticsearch's calls, as mod_mam's Elasticsearch backend makes
%% them, against a server presenting itself as Elasticsearch 8.
elastic() ->
    Doc = #{<<"mam_id">> => 1, <<"owner">> => <<"alice@demo">>, <<"body">> => <<"hi bob">>},
    step("elastic: health -> ~p", [element(1, mongoose_elasticsearch:health())]),
    step("elastic: insert_document -> ~p",
         [element(1, mongoose_elasticsearch:insert_document(<<"messages">>, <<"pm">>, <<"1">>, Doc))]),
    Query = #{query => #{term => #{<<"owner">> => <<"alice@demo">>}}},
    {ok, #{<<"hits">> := #{<<"hits">> := Hits}}} =
        mongoose_elasticsearch:search(<<"messages">>, <<"pm">>, Query),
    step("elastic: search owner alice -> ~p", [[maps:get(<<"_source">>, H) || H <- Hits]]),
    step("elastic: count -> ~p", [mongoose_elasticsearch:count(<<"messages">>, <<"pm">>, Query)]),
    step("elastic: delete_by_query -> ~p",
         [mongoose_elasticsearch:delete_by_query(<<"messages">>, <<"pm">>, Query)]),
    print_stats(elastic, global, default).

%% Two datacenters on two nodes of their own, sharing Redis database 12.
datacenters() ->
    step("starting two datacenters (dc1, dc2) as separate Erlang nodes", []),
    ok = flush_demo_db(),
    [{Dc1, P1, N1}, {Dc2, P2, N2}] =
        [start_dc(Name, Port) || {Name, Port} <- [{dc1, 15561}, {dc2, 15562}]],
    Self = self(),
    ok = erpc:call(N1, mongoose_native_demo_dc, connect, [<<"alice">>, Self]),
    ok = erpc:call(N2, mongoose_native_demo_dc, connect, [<<"bob">>, Self]),
    step("alice is on ~s, bob on ~s; waiting for the session table", [Dc1, Dc2]),
    timer:sleep(2500),
    ok = erpc:call(N1, mongoose_native_demo_dc, send, [<<"alice">>, <<"bob">>, <<"hi bob, from dc1">>]),
    expect(),
    ok = erpc:call(N2, mongoose_native_demo_dc, send, [<<"bob">>, <<"alice">>, <<"hi alice, from dc2">>]),
    expect(),
    step("bob moves from dc2 to dc1", []),
    erpc:call(N2, mongoose_native_demo_dc, disconnect, [<<"bob">>]),
    ok = erpc:call(N1, mongoose_native_demo_dc, connect, [<<"bob">>, Self]),
    timer:sleep(1500),
    ok = erpc:call(N1, mongoose_native_demo_dc, send, [<<"alice">>, <<"bob">>, <<"still there, bob?">>]),
    expect(),
    print_metrics(Dc1, erpc:call(N1, mongoose_native_demo_dc, metrics, [])),
    print_metrics(Dc2, erpc:call(N2, mongoose_native_demo_dc, metrics, [])),
    [peer:stop(P) || P <- [P1, P2]],
    step("datacenters stopped", []).

%% The datacenters' session table starts empty.
flush_demo_db() ->
    {ok, _} = mongoose_wpool:start(redis, global, demo_flush, [{workers, 1}], #{database => 12}),
    {ok, <<"OK">>} = mongoose_wpool:call(redis, global, demo_flush, {q, [<<"FLUSHDB">>]}),
    mongoose_wpool:stop(redis, global, demo_flush).

start_dc(Name, Port) ->
    Local = <<(atom_to_binary(Name))/binary, ".demo.example">>,
    {ok, Peer, Node} = peer:start(#{name => peer:random_name(atom_to_list(Name)),
                                    args => ["-connect_all", "false"]}),
    ok = erpc:call(Node, code, add_paths, [code:get_path()]),
    ok = erpc:call(Node, mongoose_native_demo_dc, start, [Local, Port], 60000),
    step("  ~s listening on 127.0.0.1:~b", [Local, Port]),
    {Local, Peer, Node}.

expect() ->
    receive
        {delivered, User, Dc, From, Body} ->
            step("  ~s@~s got ~p from ~s", [User, Dc, Body, jid_text(From)])
    after 5000 ->
            step("  (nothing arrived within 5 s)", [])
    end.

jid_text(Jid) ->
    try mod_global_distrib_adapter:jid_to_binary(Jid) catch _:_ -> io_lib:format("~p", [Jid]) end.

print_metrics(Dc, Metrics) ->
    io:format("~n  global distribution metrics of ~s~n", [Dc]),
    [io:format("  ~-52s ~s~n", [K, value(V)]) || {K, V} <- lists:sort(maps:to_list(Metrics))],
    ok.

value(V) when is_integer(V) -> integer_to_list(V);
value(#{count := N} = H) -> io_lib:format("count ~b, mean ~p", [N, maps:get(mean, H, 0)]);
value(V) -> io_lib:format("~p", [V]).

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
