%% The reliability suite (issue 21), for every pool type with a server
%% here; `make reliability' runs it with the generated bad-config cases
%% and bad_input_SUITE's secrets, and prints one results table.
%%
%% Each type is one row of `row/1': how to start, kill and restart its
%% private server, the connection options for a server on a port, a read
%% and a write, and what the server kept afterwards. Every type runs:
%%
%%   killed_under_load     100 processes call the pool while its server is
%%                         killed (kill -9), stays down 5 s and restarts;
%%                         no call may take longer than call_timeout (plus
%%                         scheduling slack), none may crash, and every
%%                         write the pool acknowledged must be in the
%%                         server afterwards where the server keeps data
%%                         across a kill (durable writes);
%%   slow_stalled_and_cut  through mn_test_proxy: a server slower than
%%                         call_timeout, one that stalls (half-open), one
%%                         that cuts answers in half, one that refuses;
%%                         no call hangs, and the pool serves again within
%%                         seconds of each heal.
%%
%% The shared servers of scripts/setup.sh are never killed: the databases,
%% Redis, a Redis Cluster, slapd, the HTTP, Elasticsearch, CQL and Riak test
%% servers run privately on ports of their own; RabbitMQ (too heavy to start privately here) is cut
%% off through the proxy instead, which a client cannot tell from a dead
%% broker.
-module(reliability_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

%% riakc's object, as riak_SUITE writes it (riakc_obj:new/3).
-record(riakc_obj, {bucket, key, vclock, contents, updatemetadata, updatevalue}).

-define(CALLERS, 100).
-define(CALL_TIMEOUT, 2000).
%% How late a call may come back past call_timeout before it counts as
%% hung: scheduling on this shared 2-core machine, not the pool.
-define(SLACK_MS, 1000).
-define(DOWN_MS, 5000).
-define(GD_DB, 13).
-define(DCS, [dc1, dc2, dc3]).

types() -> [redis, redis_cluster, pgsql, mysql, odbc, ldap, http, elastic, rabbit, cassandra, riak].

%% The partition part runs in the default run again since the transport
%% stopped dropping stanzas it had accepted (issue 21: a link closed by its
%% peer, or whose connection failed, lost what it had queued without a
%% bounce; see the README's Reliability section).
all() ->
    [{group, T} || T <- types()] ++ [{group, partitions}].

groups() ->
    [{T, [], [killed_under_load, slow_stalled_and_cut]} || T <- types()]
        ++ [{partitions, [], [partition_heal_and_restart]}].

suite() -> [{timetrap, {minutes, 4}}].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    _ = application:ensure_all_started(inets),
    Config.



end_per_suite(_Config) -> ok.

%% Three datacenters as gd_SUITE starts them (its helpers), on Redis
%% database ?GD_DB, each one's listener behind a proxy of this suite: the
%% proxy's port is what the others are told to connect to.
init_per_group(partitions, Config0) ->
    Config = gd_SUITE:init_per_suite(Config0),
    persistent_term:put({gd_SUITE, redis}, {"redis-cli -n " ++ integer_to_list(?GD_DB),
                                            #{database => ?GD_DB}}),
    "OK" ++ _ = os:cmd("redis-cli -n " ++ integer_to_list(?GD_DB) ++ " FLUSHDB"),
    Dcs = maps:from_list([{Dc, start_dc(Dc, Port, mn_test_proxy:start(Port))}
                          || {Dc, Port} <- lists:zip(?DCS, gd_SUITE:free_ports(3))]),
    persistent_term:put({?MODULE, dcs}, Dcs),
    Config;
init_per_group(Type, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Type)),
    ok = filelib:ensure_path(Dir),
    Row = row(Type),
    Server = (maps:get(start, Row))(#{dir => Dir, type => Type}),
    [{type, Type}, {row, Row}, {server, Server} | Config].

end_per_group(partitions, _Config) ->
    [begin catch peer:stop(Peer), mn_test_proxy:stop(P) end
     || #{peer := Peer, proxy := P} <- maps:values(persistent_term:get({?MODULE, dcs}))],
    ok;
end_per_group(_Type, Config) ->
    Row = ?config(row, Config),
    (maps:get(stop, Row))(?config(server, Config)),
    ok.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

%%--------------------------------------------------------------------
%% The table of types. A row:
%%   port     where its private server listens (or the shared one, for
%%            the types this suite cuts through the proxy only);
%%   start, kill, restart, stop (Server) -> Server: the server's life,
%%            Server a map the row keeps what it needs in;
%%   conn(Port) -> {PoolType, ConnOpts} for a server on Port;
%%   setup()  run once the pool is up (tables, queues);
%%   read() / write(Id) -> answer, with ok(Answer) telling success;
%%   kept() -> the write ids the server holds, or `none' if it keeps
%%            nothing across a restart;
%%   killed   (optional) what killed_under_load's row calls the kill;
%%   proxies(Server) (optional) the proxies the server sits behind for
%%            good, which slow_stalled_and_cut faults instead of one of
%%            its own.
%%--------------------------------------------------------------------

row(redis) ->
    Port = 6391,
    Start = fun(S = #{dir := Dir}) ->
                    %% Every write fsynced before it is acknowledged.
                    ok = mn_test_redis:start(Port, ["--appendonly", "yes", "--appendfsync", "always",
                                                    "--dir", Dir]),
                    S
            end,
    (redis_calls())#{port => Port, start => Start, restart => Start,
                     kill => fun(S) -> ok = mn_test_redis:stop(Port), S end,
                     stop => fun(_) -> mn_test_redis:stop(Port) end,
                     conn => fun(P) -> {redis, #{host => "127.0.0.1", port => P}} end};
%% Three masters without replicas on 7291-7293 (test/servers/
%% private_redis_cluster.sh, every write fsynced), each behind a proxy of
%% this suite for good on 7391-7393: the nodes announce the proxies' ports,
%% so the pool reaches every node through one. The first master is killed
%% (its slots have no other copy: the cluster is down until it is back) and
%% its proxy refuses meanwhile, as nothing listens on a dead node's port;
%% slow_stalled_and_cut faults all three proxies.
row(redis_cluster) ->
    Port = 7291,
    Proxied = 7391,
    N = 3,
    Cluster = fun(Args) -> sh(filename:join(servers_dir(), "private_redis_cluster.sh"), Args) end,
    Up = fun(Dir) -> Cluster(["start", Dir, Port, N, Proxied]) end,
    (redis_calls())#{
      port => Proxied,
      killed => "kill -9 of 1 of 3 masters (no replicas)",
      start => fun(S = #{dir := Dir}) ->
                       Proxies = [mn_test_proxy:start(Port + I, Proxied + I) || I <- lists:seq(0, N - 1)],
                       Up(Dir),
                       S#{proxies => Proxies}
               end,
      kill => fun(S = #{dir := Dir, proxies := [P | _]}) ->
                      Cluster(["kill", Dir, Port]),
                      mn_test_proxy:set(P, refuse),
                      S
              end,
      restart => fun(S = #{dir := Dir, proxies := [P | _]}) ->
                         Up(Dir),
                         mn_test_proxy:set(P, pass),
                         S
                 end,
      stop => fun(#{dir := Dir, proxies := Ps}) ->
                      [mn_test_proxy:stop(P) || P <- Ps],
                      Cluster(["stop", Dir])
              end,
      proxies => fun(#{proxies := Ps}) -> Ps end,
      conn => fun(P) ->
                      {redis, #{mode => <<"cluster">>,
                                servers => [#{host => <<"127.0.0.1">>, port => P + I}
                                            || I <- lists:seq(0, N - 1)]}}
              end};
row(pgsql) -> sql_row(pgsql, 5491, fun(P) -> db_conn(pgsql, P, "postgres") end);
row(mysql) -> sql_row(mysql, 3391, fun(P) -> db_conn(mysql, P, "root") end);
row(odbc) ->
    sql_row(pgsql, 5492,
            fun(P) ->
                    #{driver => odbc,
                      settings => "Driver=PostgreSQL Unicode;Servername=127.0.0.1;Port="
                                  ++ integer_to_list(P) ++ ";Database=test;Username=postgres"}
            end);
row(ldap) ->
    Port = 3491,
    Start = fun(S = #{dir := Dir}) -> slapd("start " ++ Dir ++ " 3491 3492"), S end,
    People = "ou=people,dc=example,dc=com",
    Dn = fun(Id) -> "uid=rel" ++ integer_to_list(Id) ++ "," ++ People end,
    #{port => Port, start => Start, restart => Start,
      kill => fun(S = #{dir := Dir}) -> kill9(filename:join(Dir, "slapd.pid")), S end,
      stop => fun(#{dir := Dir}) -> kill9(filename:join(Dir, "slapd.pid")) end,
      conn => fun(P) -> {ldap, #{servers => ["127.0.0.1"], port => P,
                                 rootdn => "cn=admin,dc=example,dc=com", password => "secret"}}
              end,
      setup => fun() -> ok end,
      read => fun() -> ldap({search, [[{base, People}, {scope, baseObject},
                                       {filter, eldap:present("objectClass")}]]})
              end,
      write => fun(Id) ->
                       Uid = "rel" ++ integer_to_list(Id),
                       ldap({add, [Dn(Id), [{"objectClass", ["inetOrgPerson"]}, {"uid", [Uid]},
                                            {"cn", [Uid]}, {"sn", ["Reliability"]}]]})
               end,
      ok => fun(ok) -> true; ({ok, _}) -> true; (_) -> false end,
      kept => fun() ->
                      {ok, {eldap_search_result, Entries, _, _}} =
                          ldap({search, [[{base, People}, {filter, eldap:equalityMatch("sn", "Reliability")},
                                          {attributes, ["uid"]}]]}),
                      [list_to_integer(U) || {eldap_entry, _, As} <- Entries, {"uid", ["rel" ++ U]} <- As]
              end};
row(http) ->
    Port = 8391,
    Start = fun(S = #{dir := Dir}) ->
                    ok = file:write_file(filename:join(Dir, "index.html"), <<"reliability">>),
                    start_os_server(S, "python3", ["-m", "http.server", integer_to_list(Port),
                                                   "--bind", "127.0.0.1", "--directory", Dir], Port)
            end,
    #{port => Port, start => Start, restart => Start,
      kill => fun kill_os_server/1, stop => fun kill_os_server/1,
      conn => fun(P) -> {http, #{host => "http://127.0.0.1:" ++ integer_to_list(P)}} end,
      setup => fun() -> ok end,
      read => fun() -> mongoose_http_client:get(global, default, <<"/index.html">>, []) end,
      ok => fun({ok, {<<"200">>, <<"reliability">>}}) -> true; (_) -> false end};
row(elastic) ->
    Port = 9291,
    Start = fun(S) ->
                    Script = filename:join(servers_dir(), "es_server.py"),
                    start_os_server(S, python(), [Script, "--port", integer_to_list(Port)], Port)
            end,
    #{port => Port, start => Start, restart => Start,
      kill => fun kill_os_server/1, stop => fun kill_os_server/1,
      conn => fun(P) -> {elastic, #{host => "127.0.0.1", port => P}} end,
      setup => fun() -> ok end,
      read => fun() -> mongoose_elasticsearch:health() end,
      write => fun(Id) ->
                       mongoose_elasticsearch:insert_document(<<"mnrel">>, <<"doc">>, integer_to_binary(Id),
                                                              #{<<"id">> => Id})
               end,
      ok => fun({ok, _}) -> true; (_) -> false end,
      %% es_server.py keeps documents in memory: a restart loses them.
      kept => fun() -> none end};
row(rabbit) ->
    Queue = <<"mn.reliability">>,
    Cut = fun(S = #{proxy := P}) -> mn_test_proxy:set(P, refuse), S end,
    Heal = fun(S = #{proxy := P}) -> mn_test_proxy:set(P, pass), S end,
    #{port => 5672,
      %% The shared broker, cut off through a proxy of its own.
      start => fun(S) -> S#{proxy => mn_test_proxy:start(5672)} end,
      kill => Cut, restart => Heal,
      stop => fun(#{proxy := P}) -> mn_test_proxy:stop(P) end,
      pool_port => fun(#{proxy := P}) -> mn_test_proxy:port(P) end,
      conn => fun(P) -> {rabbit, #{host => "127.0.0.1", port => P, confirms_enabled => true}} end,
      setup => fun() ->
                       _ = rabbit({amqp_call, {'queue.delete', 0, Queue, false, false, false}}),
                       {ok, _} = rabbit({amqp_call, {'queue.declare', 0, Queue, false, true, false,
                                                     false, false, []}}),
                       ok
               end,
      read => fun() -> rabbit({amqp_call, {'queue.declare', 0, Queue, true, true, false, false,
                                           false, []}})
              end,
      write => fun(Id) ->
                       rabbit({amqp_publish, mongoose_amqp:basic_publish(<<>>, Queue),
                               mongoose_amqp:message(integer_to_binary(Id))})
               end,
      ok => fun(ok) -> true; ({ok, _}) -> true; (_) -> false end,
      kept => fun() -> drain(Queue, []) end};

%% The CQL and Riak protocol test servers (no Cassandra or Riak runs here)
%% keep their data in memory: a restart loses it.
row(cassandra) ->
    Port = 9391,
    Start = fun(S = #{dir := Dir}) ->
                    Schema = filename:join(Dir, "schema.cql"),
                    ok = file:write_file(Schema, "CREATE TABLE mongooseim.mn_rel (id bigint PRIMARY KEY)\n"),
                    start_os_server(S, python(), [filename:join(servers_dir(), "cql_server.py"),
                                                  "--port", integer_to_list(Port),
                                                  "--keyspace", "mongooseim", "--schema", Schema],
                                    Port)
            end,
    #{port => Port, start => Start, restart => Start,
      kill => fun kill_os_server/1, stop => fun kill_os_server/1,
      conn => fun(P) -> {cassandra, #{servers => [#{host => "127.0.0.1", port => P}]}} end,
      setup => fun() -> ok end,
      read => fun() -> mongoose_cassandra:cql_read(default, undefined, ?MODULE, rel_select, #{id => 0}) end,
      write => fun(Id) ->
                       mongoose_cassandra:cql_write(default, undefined, ?MODULE, rel_insert, [#{id => Id}])
               end,
      ok => fun(ok) -> true; ({ok, _}) -> true; (_) -> false end,
      kept => fun() -> none end};
row(riak) ->
    Port = 8491,
    Start = fun(S) ->
                    start_os_server(S, python(), [filename:join(servers_dir(), "riak_server.py"),
                                                  "--port", integer_to_list(Port)],
                                    Port)
            end,
    #{port => Port, start => Start, restart => Start,
      kill => fun kill_os_server/1, stop => fun kill_os_server/1,
      conn => fun(P) -> {riak, #{address => "127.0.0.1", port => P}} end,
      setup => fun() -> ok end,
      read => fun() -> mongoose_riak:get(<<"mnrel">>, <<"0">>) end,
      write => fun(Id) ->
                       mongoose_riak:put(#riakc_obj{bucket = <<"mnrel">>, key = integer_to_binary(Id),
                                                     contents = [], updatevalue = <<"1">>})
               end,
      %% A read of a key never written answers notfound: an answer.
      ok => fun(ok) -> true; ({ok, _}) -> true; ({error, notfound}) -> true; (_) -> false end,
      kept => fun() -> none end}.

%% The calls of both Redis rows (KEYS and FLUSHALL go to every master of a
%% cluster).
redis_calls() ->
    #{setup => fun() -> {ok, _} = redis(["FLUSHALL"]), ok end,
      read => fun() -> redis(["GET", "mnrel:0"]) end,
      write => fun(Id) -> redis(["SET", ["mnrel:", integer_to_list(Id)], "1"]) end,
      ok => fun({ok, _}) -> true; (_) -> false end,
      kept => fun() ->
                      {ok, Keys} = redis(["KEYS", "mnrel:*"]),
                      [binary_to_integer(K) || <<"mnrel:", K/binary>> <- Keys]
              end}.

%% mongoose_cassandra's callback: the cassandra row's queries.
prepared_queries() ->
    [{rel_insert, "INSERT INTO mn_rel (id) VALUES (?)"},
     {rel_select, "SELECT id FROM mn_rel WHERE id = ?"}].

db_conn(Driver, Port, User) ->
    #{driver => Driver, host => "127.0.0.1", port => Port, database => "test", username => User}.

sql_row(Engine, Port, Conn) ->
    Start = fun(S = #{dir := Dir}) -> private_db("start", Engine, Dir, Port), S end,
    #{port => Port, start => Start, restart => Start,
      kill => fun(S = #{dir := Dir}) -> private_db("kill", Engine, Dir, ""), S end,
      stop => fun(#{dir := Dir}) -> private_db("stop", Engine, Dir, "") end,
      conn => fun(P) -> {rdbms, Conn(P)} end,
      setup => fun() ->
                       _ = sql(<<"DROP TABLE IF EXISTS mn_rel">>),
                       {updated, _} = sql(<<"CREATE TABLE mn_rel (id BIGINT PRIMARY KEY)">>),
                       ok
               end,
      read => fun() -> sql(<<"SELECT 1">>) end,
      write => fun(Id) -> sql(["INSERT INTO mn_rel VALUES (", integer_to_list(Id), ")"]) end,
      ok => fun({selected, _}) -> true; ({updated, _}) -> true; (_) -> false end,
      kept => fun() ->
                      {selected, Rows} = sql(<<"SELECT id FROM mn_rel">>),
                      [to_int(Id) || {Id} <- Rows]
              end}.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

killed_under_load(Config) ->
    #{kill := Kill, restart := Restart} = Row = ?config(row, Config),
    Server0 = ?config(server, Config),
    start_pool(Row, Server0),
    Run = start_callers(Row, ?CALLERS),
    timer:sleep(1000),
    mark(Run, down),
    Server1 = Kill(Server0),
    timer:sleep(?DOWN_MS),
    Server2 = Restart(Server1),
    mark(Run, up),
    Recovered = wait_recovered(Run, 60000),
    timer:sleep(1000),
    R = stop_callers(Run),
    {Acked, Missing} = missing_writes(Row, R),
    _ = Server2,
    mn_test_results:row(io_lib:format("~p: ~s under ~b callers, down ~b s",
                                      [?config(type, Config), maps:get(killed, Row, "kill -9"),
                                       ?CALLERS, ?DOWN_MS div 1000]),
                        [{"calls", maps:get(calls, R)}, {"hung", maps:get(hung, R)},
                         {"crashed", maps:get(crashed, R)},
                         {"errors while down", maps:get(down_errors, R)},
                         {"timeouts", maps:get(timeouts, R)},
                         {"ok again after (ms)", Recovered},
                         {"acked writes", Acked}, {"acked missing", Missing}]),
    ?assertEqual(0, maps:get(hung, R)),
    ?assertEqual(0, maps:get(crashed, R)),
    ?assert(is_integer(Recovered)),
    ?assert(maps:get(down_errors, R) > 0),
    case Missing of
        n_a -> ok;
        _ -> ?assertEqual(0, Missing)
    end.

%% Through the proxy: a server slower than call_timeout, a stalled one, one
%% cutting answers in half, one refusing; each for 3 s under 20 callers,
%% then healed.
slow_stalled_and_cut(Config) ->
    Row = ?config(row, Config),
    {Proxies, Own} = case maps:find(proxies, Row) of
                         {ok, F} -> {F(?config(server, Config)), []};
                         error -> P = mn_test_proxy:start(maps:get(port, Row)), {[P], [P]}
                     end,
    try
        start_pool(Row, #{}, mn_test_proxy:port(hd(Proxies)), 1000),
        [proxy_fault(Config, Row, Proxies, Mode)
         || Mode <- [{delay, 1500}, stall, cut, refuse]]
    after
        [mn_test_proxy:stop(P) || P <- Own]
    end.

proxy_fault(Config, Row, Proxies, Mode) ->
    Run = start_callers(Row, 20, 1000),
    timer:sleep(300),
    mark(Run, down),
    [mn_test_proxy:set(P, Mode) || P <- Proxies],
    timer:sleep(3000),
    [mn_test_proxy:set(P, pass) || P <- Proxies],
    mark(Run, up),
    Recovered = wait_recovered(Run, 30000),
    R = stop_callers(Run),
    mn_test_results:row(io_lib:format("~p: proxy ~p 3 s, 20 callers, call_timeout 1 s",
                                      [?config(type, Config), Mode]),
                        [{"calls", maps:get(calls, R)}, {"hung", maps:get(hung, R)},
                         {"crashed", maps:get(crashed, R)},
                         {"failed while faulty", maps:get(down_errors, R)},
                         {"timeouts", maps:get(timeouts, R)},
                         {"ok again after heal (ms)", Recovered}]),
    ?assertEqual(0, maps:get(hung, R)),
    ?assertEqual(0, maps:get(crashed, R)),
    ?assert(is_integer(Recovered)).

%%--------------------------------------------------------------------
%% Callers
%%--------------------------------------------------------------------

start_pool(Row, Server) ->
    Port = case maps:find(pool_port, Row) of
               {ok, F} -> F(Server);
               error -> maps:get(port, Row)
           end,
    start_pool(Row, Server, Port, ?CALL_TIMEOUT).

start_pool(#{conn := Conn, setup := Setup}, _Server, Port, CallTimeout) ->
    {Type, Opts} = Conn(Port),
    {ok, _} = mongoose_wpool:start(Type, global, default,
                                   [{workers, 10}, {call_timeout, CallTimeout}], Opts),
    ok = Setup().

start_callers(Row, N) -> start_callers(Row, N, ?CALL_TIMEOUT).

start_callers(Row, N, CallTimeout) ->
    Marks = ets:new(marks, [public, {read_concurrency, true}]),
    Pids = [spawn_link(fun() -> caller(Row, Marks, I, CallTimeout) end) || I <- lists:seq(1, N)],
    #{marks => Marks, pids => Pids}.

mark(#{marks := M}, What) ->
    ets:insert(M, {What, now_ms()}).

%% Until a call that started after `up' succeeded; its delay in ms, or
%% `never'.
wait_recovered(#{marks := M} = Run, Left) when Left > 0 ->
    case ets:lookup(M, first_ok) of
        [{first_ok, T}] ->
            [{up, Up}] = ets:lookup(M, up),
            T - Up;
        [] -> timer:sleep(50), wait_recovered(Run, Left - 50)
    end;
wait_recovered(_, _) -> never.

stop_callers(#{pids := Pids, marks := M}) ->
    [P ! {stop, self()} || P <- Pids],
    Rs = [receive {counts, P, C} -> C after 30000 -> ct:fail({caller_stuck, P}) end || P <- Pids],
    ets:delete(M),
    lists:foldl(fun(C, Acc) ->
                        maps:fold(fun(acked, V, A) -> maps:update_with(acked, fun(L) -> [V | L] end, A);
                                     (K, V, A) -> maps:update_with(K, fun(X) -> X + V end, V, A)
                                  end, Acc, C)
                end, #{acked => []}, Rs).

%% Caller I writes ids I * 10^7 + Seq (where the row writes), every other
%% call a read.
caller(Row, Marks, I, CallTimeout) ->
    caller(Row, Marks, I, CallTimeout, 0,
           #{calls => 0, ok => 0, errors => 0, timeouts => 0, hung => 0, crashed => 0,
             down_errors => 0, acked => []}).

caller(Row, Marks, I, CallTimeout, Seq, Acc) ->
    receive
        {stop, From} -> From ! {counts, self(), Acc#{acked := lists:reverse(maps:get(acked, Acc))}}
    after 0 ->
            {Id, Call} = case maps:find(write, Row) of
                             {ok, W} when Seq rem 2 =:= 0 ->
                                 N = I * 10000000 + Seq,
                                 {N, fun() -> W(N) end};
                             _ -> {read, maps:get(read, Row)}
                         end,
            T0 = now_ms(),
            Result = try Call()
                     catch exit:{timeout, _} -> timeout;
                           Class:Reason -> {crashed, Class, Reason}
                     end,
            T1 = now_ms(),
            Ok = (maps:get(ok, Row))(Result),
            Down = in_fault(Marks, T0),
            Kind = case Result of
                       _ when Ok -> ok;
                       timeout -> timeouts;
                       {crashed, _, _} -> ct:pal("call crashed: ~p", [Result]), crashed;
                       _ -> errors
                   end,
            Acc1 = bump([calls, Kind]
                        ++ [hung || T1 - T0 > CallTimeout + ?SLACK_MS]
                        ++ [down_errors || Down, not Ok], Acc),
            Acc2 = case Ok andalso is_integer(Id) of
                       true -> Acc1#{acked := [Id | maps:get(acked, Acc1)]};
                       false -> Acc1
                   end,
            Ok andalso after_up(Marks, T0) andalso ets:insert_new(Marks, {first_ok, T1}),
            %% A failing caller paces itself, as a real client would.
            Ok orelse timer:sleep(10),
            caller(Row, Marks, I, CallTimeout, Seq + 1, Acc2)
    end.

bump(Keys, Acc) ->
    lists:foldl(fun(K, A) -> maps:update_with(K, fun(X) -> X + 1 end, 1, A) end, Acc, Keys).

in_fault(Marks, T) ->
    case ets:lookup(Marks, down) of
        [{down, D}] when T >= D ->
            case ets:lookup(Marks, up) of
                [{up, U}] -> T < U;
                [] -> true
            end;
        _ -> false
    end.

after_up(Marks, T) ->
    case ets:lookup(Marks, up) of
        [{up, U}] -> T >= U;
        [] -> false
    end.

%% Acknowledged writes the server does not hold afterwards (asked again
%% while workers are still reconnecting).
missing_writes(#{kept := Kept}, #{acked := AckedLists}) ->
    Acked = lists:append(AckedLists),
    case retry(Kept, 100) of
        none -> {length(Acked), n_a};
        Ids ->
            Held = sets:from_list(Ids, [{version, 2}]),
            Missing = [A || A <- Acked, not sets:is_element(A, Held)],
            Missing =/= [] andalso ct:pal("missing acknowledged writes: ~p", [lists:sublist(Missing, 20)]),
            {length(Acked), length(Missing)}
    end;
missing_writes(_Row, _) -> {n_a, n_a}.

retry(F, 0) -> F();
retry(F, N) ->
    try F()
    catch error:{badmatch, _} -> timer:sleep(100), retry(F, N - 1)
    end.

now_ms() -> erlang:monotonic_time(millisecond).

%%--------------------------------------------------------------------
%% Servers and calls
%%--------------------------------------------------------------------

redis(Cmd) -> mongoose_wpool:call(redis, global, default, {q, Cmd}).

sql(Query) -> mongoose_rdbms:sql_query(global, Query).

ldap(Req) -> mongoose_wpool:call(ldap, global, default, Req).

rabbit(Req) -> mongoose_wpool:call(rabbit, global, default, Req).

%% Takes every message off the queue. A worker still reconnecting after the
%% cut answers `no_connection` at once: ask again (for up to 10 s), keeping
%% what was taken, since a taken message is gone from the queue.
drain(Queue, Acc) -> drain(Queue, Acc, 100).

drain(Queue, Acc, Tries) ->
    case rabbit({amqp_call, {'basic.get', 0, Queue, true}}) of
        {ok, {{'basic.get_ok', _, _, _, _, _}, {amqp_msg, _, Body}}} ->
            drain(Queue, [binary_to_integer(Body) | Acc], Tries);
        {ok, {'basic.get_empty', _}} ->
            Acc;
        {error, {no_connection, _}} when Tries > 0 ->
            timer:sleep(100),
            drain(Queue, Acc, Tries - 1)
    end.

to_int(I) when is_integer(I) -> I;
to_int(B) when is_binary(B) -> binary_to_integer(B).

root() ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:dirname(filename:dirname(Source)).

servers_dir() -> filename:join([root(), "test", "servers"]).

venv() ->
    case os:getenv("MN_VENV") of
        false -> "/var/cache/mongoose_native/venv";
        Dir -> Dir
    end.

python() -> filename:join(venv(), "bin/python").

private_db(Cmd, Engine, Dir, Port) ->
    sh(filename:join(servers_dir(), "private_db.sh"), [Cmd, Engine, Dir, Port]).

%% A helper script's run; the test fails with its output unless it succeeds.
sh(Script, Args) ->
    Words = [if is_integer(A) -> integer_to_list(A);
                is_atom(A) -> atom_to_list(A);
                true -> A
             end || A <- Args],
    Out = os:cmd(lists:flatten(["bash ", Script, [[" ", W] || W <- Words], " 2>&1; echo rc=$?"])),
    case lists:suffix("rc=0\n", Out) of
        true -> ok;
        false -> ct:fail({Script, Args, Out})
    end.

slapd(Args) ->
    Out = os:cmd("bash " ++ filename:join([root(), "scripts", "slapd.sh"]) ++ " " ++ Args
                 ++ " 2>&1; echo rc=$?"),
    case lists:suffix("rc=0\n", Out) of
        true -> ok;
        false -> ct:fail({slapd, Args, Out})
    end.

kill9(Pidfile) ->
    case file:read_file(Pidfile) of
        {ok, Pid} -> _ = os:cmd("kill -9 " ++ string:trim(binary_to_list(Pid))), ok;
        {error, _} -> ok
    end.

%% A server run as a port of a process of its own (so it outlives the
%% process that started it), killed with kill -9 through its OS pid, kept
%% in DIR/server.pid.
start_os_server(S = #{dir := Dir}, Exe, Args, Port) ->
    Self = self(),
    Owner = spawn(fun() ->
                          P = open_port({spawn_executable, os:find_executable(Exe)},
                                        [{args, Args}, exit_status, stderr_to_stdout]),
                          {os_pid, OsPid} = erlang:port_info(P, os_pid),
                          Self ! {os_pid, self(), OsPid},
                          drain_port(P)
                  end),
    OsPid = receive {os_pid, Owner, Pid} -> Pid after 5000 -> ct:fail(server_did_not_start) end,
    ok = file:write_file(filename:join(Dir, "server.pid"), integer_to_list(OsPid)),
    ok = wait_listening(Port, 100),
    S.

drain_port(P) ->
    receive
        {P, {exit_status, _}} -> ok;
        {P, _} -> drain_port(P)
    end.

kill_os_server(S = #{dir := Dir}) ->
    kill9(filename:join(Dir, "server.pid")),
    S.

wait_listening(_Port, 0) -> {error, not_listening};
wait_listening(Port, N) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], 100) of
        {ok, Sock} -> gen_tcp:close(Sock), ok;
        {error, _} -> timer:sleep(100), wait_listening(Port, N - 1)
    end.

%%--------------------------------------------------------------------
%% Datacenter partitions
%%--------------------------------------------------------------------

%% The bounce limits: a stanza that finds no way to its datacenter is
%% tried again after 200, 400, 800 and 1600 ms, then bounced with an error.
dc_opts(Dc, Port, Proxy) ->
    Opts = gd_SUITE:dc_opts(Dc, Port),
    Conns = maps:get(connections, Opts),
    Opts#{connections := Conns#{advertised_endpoints => [{"127.0.0.1", mn_test_proxy:port(Proxy)}]},
          bounce := #{resend_after_ms => 200, max_retries => 4}}.

start_dc(Dc, Port, Proxy) ->
    {Dc, M} = gd_SUITE:start_dc(Dc, Port, dc_opts(Dc, Port, Proxy)),
    M#{proxy => Proxy}.

%% Four senders (two on dc1, two on dc3) send to bob on dc2, one stanza
%% each every 20 ms: 3 s steady; dc2's link cut (its proxy refuses every
%% connection) for 3 s, healed; 2 s steady; dc2's node stopped and started
%% again (bob reconnects); 3 s steady. Each stanza is counted sent,
%% delivered (once, twice), out of its sender's order, bounced (an error
%% back to its sender) or lost; a lost one must have been sent while a
%% link was being cut or the node stopped, when stanzas already written to
%% a connection that then dies cannot be known to be lost.
partition_heal_and_restart(_Config) ->
    Dcs0 = persistent_term:get({?MODULE, dcs}),
    Self = self(),
    Bob = spawn_link(fun() -> collect(Self, #{}) end),
    ok = dc_rpc(Dcs0, dc2, connect, [<<"bob">>, <<"r">>, Bob]),
    Senders = [{Dc, <<"s", (integer_to_binary(I))/binary>>} || {Dc, I} <- [{dc1, 1}, {dc1, 2}, {dc3, 3}, {dc3, 4}]],
    Events = ets:new(events, [public, ordered_set]),
    Log = fun(What) -> ets:insert(Events, {erlang:monotonic_time(millisecond), What}) end,
    Pids = [spawn_link(fun() -> sender(Self, Dcs0, Dc, User, Bob) end) || {Dc, User} <- Senders],
    timer:sleep(3000),
    #{proxy := Proxy2, port := Port2} = maps:get(dc2, Dcs0),
    Log(cut), mn_test_proxy:set(Proxy2, refuse),
    timer:sleep(3000),
    Log(heal), mn_test_proxy:set(Proxy2, pass),
    timer:sleep(2000),
    %% While its node is down nothing listens on dc2's address: the proxy
    %% refuses too (accepting for a dead node would lose what is written).
    Log(stop), mn_test_proxy:set(Proxy2, refuse), peer:stop(maps:get(peer, maps:get(dc2, Dcs0))),
    Dcs1 = Dcs0#{dc2 := start_dc(dc2, Port2, Proxy2)},
    mn_test_proxy:set(Proxy2, pass),
    persistent_term:put({?MODULE, dcs}, Dcs1),
    ok = dc_rpc(Dcs1, dc2, connect, [<<"bob">>, <<"r">>, Bob]),
    Log(restarted),
    timer:sleep(3000),
    Sent = lists:append([begin P ! {stop, Self}, receive {sent, P, L} -> L end end || P <- Pids]),
    %% Retries and bounces settle (200 + 400 + 800 + 1600 ms), then count.
    timer:sleep(5000),
    Bob ! {report, Self},
    Delivered = receive {delivered, D} -> D end,
    Bounced = lists:append([bounced(U) || {_, U} <- Senders]),
    Report = partition_report(Sent, Delivered, Bounced, ets:tab2list(Events)),
    ct:pal("partition report: ~p", [Report]),
    #{sent := S, delivered := Dl, twice := Twice, out_of_order := Ooo, bounced := B,
      lost := Lost, lost_outside_faults := Unexplained} = Report,
    mn_test_results:row("partitions: 3 datacenters, dc2's link cut 3 s and healed, dc2 restarted",
                        [{"sent", S}, {"delivered", Dl}, {"delivered twice", Twice},
                         {"out of order", Ooo}, {"bounced", B}, {"lost", length(Lost)},
                         {"lost outside a cut or stop", length(Unexplained)}]),
    ct:pal("lost stanzas (sender, seq, ms after the cut began): ~p", [Lost]),
    ?assertEqual(0, Twice),
    ?assertEqual(0, Ooo),
    ?assertEqual([], Unexplained),
    ?assert(Dl > S div 2).

dc_rpc(Dcs, Dc, F, A) ->
    erpc:call(maps:get(node, maps:get(Dc, Dcs)), gd_test_dc, F, A, 10000).

%% A session on Dc sending to bob every 20 ms, through one process on Dc's
%% node (gd_test_dc:session/0) as a client's session process would: the
%% transport keeps one sending process's stanzas in order (one connection
%% per datacenter), not those of many (each erpc call is a new process).
%% Its bounced stanzas (errors) come back to the session's box.
sender(Parent, Dcs, Dc, User, _Bob) ->
    Box = spawn_link(fun() -> bounce_box([]) end),
    register(binary_to_atom(<<"bounces_", User/binary>>), Box),
    ok = dc_rpc(Dcs, Dc, connect, [User, <<"r">>, Box]),
    Session = dc_rpc(Dcs, Dc, session, []),
    send_loop(Parent, Session, User, 1, []).

send_loop(Parent, Session, User, N, Sent) ->
    receive
        {stop, From} -> From ! {sent, self(), lists:reverse(Sent)}
    after 20 ->
            Body = <<User/binary, "-", (integer_to_binary(N))/binary>>,
            T = erlang:monotonic_time(millisecond),
            Ref = make_ref(),
            Session ! {send, self(), Ref, {User, <<"r">>}, <<"bob">>, Body},
            Ok = receive {Ref, ok} -> true after 10000 -> false end,
            send_loop(Parent, Session, User, N + 1, [{User, N, T, Ok} | Sent])
    end.

bounce_box(Acc) ->
    receive
        {route, _From, _To, _Acc, Packet} -> bounce_box([gd_test_dc:body(Packet) | Acc]);
        {report, From} -> From ! {bounced, Acc}, bounce_box(Acc)
    end.

bounced(User) ->
    Box = whereis(binary_to_atom(<<"bounces_", User/binary>>)),
    Box ! {report, self()},
    receive {bounced, L} -> [split(B) || B <- L] end.

%% bob's stanzas, in arrival order.
collect(Parent, Acc) ->
    receive
        {route, _From, _To, _Acc, Packet} ->
            collect(Parent, maps:update_with(order, fun(L) -> [gd_test_dc:body(Packet) | L] end,
                                             [gd_test_dc:body(Packet)], Acc));
        {report, From} -> From ! {delivered, lists:reverse(maps:get(order, Acc, []))}
    end.

split(Body) ->
    [User, N] = binary:split(Body, <<"-">>),
    {User, binary_to_integer(N)}.

partition_report(Sent, DeliveredBodies, Bounced, Events) ->
    Delivered = [split(B) || B <- DeliveredBodies],
    Counts = lists:foldl(fun(K, M) -> maps:update_with(K, fun(X) -> X + 1 end, 1, M) end,
                         #{}, Delivered),
    Twice = maps:size(maps:filter(fun(_, C) -> C > 1 end, Counts)),
    %% Out of order: a stanza arriving after a later one of its sender.
    {Ooo, _} = lists:foldl(fun({U, N}, {O, Last}) ->
                                   case maps:get(U, Last, 0) of
                                       L when N < L -> {O + 1, Last};
                                       _ -> {O, Last#{U => N}}
                                   end
                           end, {0, #{}}, Delivered),
    BouncedSet = sets:from_list(Bounced, [{version, 2}]),
    Faults = fault_windows(Events),
    Lost = [{U, N, T} || {U, N, T, _} <- Sent, not maps:is_key({U, N}, Counts),
                         not sets:is_element({U, N}, BouncedSet)],
    Unexplained = [L || {_, _, T} = L <- Lost, not lists:any(fun({A, B}) -> T >= A andalso T =< B end,
                                                             Faults)],
    %% Shown in ms after the cut began.
    [{_, cut} | _] = [E || {_, cut} = E <- Events],
    Cut = hd([At || {At, cut} <- Events]),
    Rel = fun(L) -> [{U, N, T - Cut} || {U, N, T} <- L] end,
    #{sent => length(Sent), delivered => maps:size(Counts), twice => Twice, out_of_order => Ooo,
      %% Stanzas whose send call itself failed on its datacenter's node.
      failed_calls => Rel([{U, N, T} || {U, N, T, false} <- Sent]),
      bounced => sets:size(BouncedSet), lost => Rel(Lost), lost_outside_faults => Rel(Unexplained),
      events => [{W, At - Cut} || {At, W} <- Events]}.

%% A cut and a stop each make stanzas sent from 1 s before it (already on
%% their way) until the link is healed or the node back unknowable.
fault_windows(Events) ->
    T = fun(What) -> hd([At || {At, W} <- Events, W =:= What]) end,
    [{T(cut) - 1000, T(heal)}, {T(stop) - 1000, T(restarted)}].
