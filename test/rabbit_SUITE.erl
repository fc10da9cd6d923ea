%% The rabbit pool type and MongooseIM's rabbit worker requests against the
%% real RabbitMQ on 127.0.0.1:5672 (guest/guest). Every publish is read
%% back with basic.get through a pool.
-module(rabbit_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-define(CANARY, <<"canary-rabbit-s3cret">>).

all() ->
    [declare_publish_read_back, confirms_on_publish_read_back, option_forms,
     mongoose_amqp_helpers, call_shapes, refused_method_keeps_the_pool, nack_is_counted,
     queue_bound_drops_oldest, stalled_channel_drops_oldest,
     reconnect_redeclares_and_loses_nothing, bad_credentials,
     bad_vhost, unreachable_broker, bad_config, malformed_requests].

init_per_suite(Config) ->
    ok = mongoose_wpool:ensure_started(),
    Config.

end_per_suite(_Config) ->
    ok.

end_per_testcase(_, _Config) ->
    mongoose_wpool:stop(),
    ok.

conn() -> #{amqp_host => "127.0.0.1"}.

start(Tag, Workers, Conn) ->
    {ok, _} = mongoose_wpool:start(rabbit, global, Tag, [{workers, Workers}],
                                   maps:merge(conn(), Conn)),
    ok.

call(Tag, Req) -> mongoose_wpool:call(rabbit, global, Tag, Req).

amqp(Tag, Method) -> call(Tag, {amqp_call, Method}).

%% Records of rabbit_framing.hrl / amqp_client.hrl as tuples, with their defaults.
exchange_declare(Name, Type) ->
    {'exchange.declare', 0, Name, Type, false, false, false, false, false, []}.
queue_declare(Name, Args) ->
    {'queue.declare', 0, Name, false, false, false, false, false, Args}.
queue_bind(Queue, Exchange) ->
    {'queue.bind', 0, Queue, Exchange, <<>>, false, []}.
queue_delete(Name) ->
    {'queue.delete', 0, Name, false, false, false}.
exchange_delete(Name) ->
    {'exchange.delete', 0, Name, false, false}.
basic_get(Queue) ->
    {'basic.get', 0, Queue, true}.
publish(Exchange, Payload) ->
    {amqp_publish, mongoose_amqp:basic_publish(Exchange, <<>>), mongoose_amqp:message(Payload)}.

%% A fanout exchange and a fresh queue bound to it.
topology(Tag, Exchange, Queue, QueueArgs) ->
    ?assertEqual({ok, {'exchange.declare_ok'}}, amqp(Tag, exchange_declare(Exchange, <<"fanout">>))),
    amqp(Tag, queue_delete(Queue)),
    ?assertEqual({ok, {'queue.declare_ok', Queue, 0, 0}}, amqp(Tag, queue_declare(Queue, QueueArgs))),
    ?assertEqual({ok, {'queue.bind_ok'}}, amqp(Tag, queue_bind(Queue, Exchange))).

%% Every payload in Queue, read with basic.get; what it took so far when
%% the worker is still reconnecting (`read_n` asks again).
drain(Tag, Queue) ->
    case amqp(Tag, basic_get(Queue)) of
        {ok, {'basic.get_empty', _}} -> [];
        {error, {no_connection, _}} -> [];
        {ok, {{'basic.get_ok', _, _, _, _, _}, {amqp_msg, _Props, Payload}}} ->
            [Payload | drain(Tag, Queue)]
    end.

%% Reads until N payloads arrived (casts are asynchronous) or 10 s passed.
read_n(Tag, Queue, N) ->
    read_n(Tag, Queue, N, [], erlang:monotonic_time(millisecond) + 10000).
read_n(Tag, Queue, N, Acc, Deadline) ->
    Got = Acc ++ drain(Tag, Queue),
    case length(Got) >= N orelse erlang:monotonic_time(millisecond) > Deadline of
        true -> Got;
        false -> timer:sleep(20), read_n(Tag, Queue, N, Got, Deadline)
    end.

rabbit_stat(Tag, Key) ->
    Stats = mongoose_wpool:stats(rabbit, global, Tag),
    proplists:get_value(Key, proplists:get_value(rabbit, Stats)).

%% Waits until every worker's lane is empty and confirmed.
wait_idle(Tag) ->
    wait_until(fun() ->
                       Stats = mongoose_wpool:stats(rabbit, global, Tag),
                       proplists:get_value(total_in_flight, Stats) =:= 0
               end).

wait_until(F) -> wait_until(F, 200).
wait_until(F, 0) -> ?assert(F());
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(50), wait_until(F, N - 1)
    end.

payloads(From, To) -> [integer_to_binary(I) || I <- lists:seq(From, To)].

%%--------------------------------------------------------------------

declare_publish_read_back(_Config) ->
    publish_read_back(plain, #{}).

confirms_on_publish_read_back(_Config) ->
    publish_read_back(confirms, #{confirms_enabled => true}).

publish_read_back(Tag, Conn) ->
    start(Tag, 4, Conn),
    Ex = <<"mn.ct.ex.", (atom_to_binary(Tag))/binary>>,
    Q = <<"mn.ct.q.", (atom_to_binary(Tag))/binary>>,
    topology(Tag, Ex, Q, []),
    [ok = mongoose_wpool:cast(rabbit, global, Tag, publish(Ex, P)) || P <- payloads(1, 100)],
    Got = read_n(Tag, Q, 100),
    ?assertEqual(lists:sort(payloads(1, 100)), lists:sort(Got)),
    wait_idle(Tag),
    ?assertEqual(100, rabbit_stat(Tag, published)),
    Stats = mongoose_wpool:stats(rabbit, global, Tag),
    [?assert(proplists:get_value(connected, W)) || {_, W} <- proplists:get_value(workers, Stats)].

%% Seed 000's tuples and MongooseIM 6.x's map names start the same pool.
option_forms(_Config) ->
    [{ok, _}] = mongoose_wpool:start_configured_pools(
                  [{rabbit, global, legacy, [{workers, 2}],
                    [{amqp_host, "127.0.0.1"}, {amqp_port, 5672}, {amqp_username, "guest"},
                     {amqp_password, "guest"}, {confirms_enabled, true},
                     {max_worker_queue_len, 100}]}], []),
    {ok, _} = mongoose_wpool:start(rabbit, global, mim, [{workers, 2}],
                                   #{host => "127.0.0.1", port => 5672, username => <<"guest">>,
                                     password => <<"guest">>, virtual_host => <<"/">>,
                                     confirms_enabled => false, max_worker_queue_len => infinity}),
    [?assertEqual({ok, {'exchange.declare_ok'}},
                  amqp(T, exchange_declare(<<"mn.ct.ex.forms">>, <<"direct">>)))
     || T <- [legacy, mim]].

%% mod_event_pusher_rabbit's own calls.
mongoose_amqp_helpers(_Config) ->
    start(event_pusher, 2, #{}),
    Declare = mongoose_amqp:exchange_declare(<<"mn.ct.ex.helpers">>, <<"topic">>),
    ?assertEqual({ok, mongoose_amqp:exchange_declare_ok()},
                 mongoose_wpool:call(rabbit, global, event_pusher, {amqp_call, Declare})),
    ?assertEqual({ok, {'exchange.delete_ok'}},
                 amqp(event_pusher, mongoose_amqp:exchange_delete(<<"mn.ct.ex.helpers">>))),
    ?assertMatch({error, {bad_request, _}},
                 amqp(event_pusher, mongoose_amqp:confirm_select())).

%% Answers of amqp_channel:call's shapes; a called publish tells its fate.
call_shapes(_Config) ->
    start(shapes, 1, #{confirms_enabled => true}),
    topology(shapes, <<"mn.ct.ex.shapes">>, <<"mn.ct.q.shapes">>, []),
    Props = {'P_basic', <<"text/plain">>, undefined,
             [{<<"h">>, longstr, <<"v">>}, {<<"n">>, signedint, 7}], 2, 5,
             <<"corr">>, undefined, undefined, <<"id1">>, 1700000000, undefined, undefined,
             <<"app">>, undefined},
    Publish = {'basic.publish', 0, <<"mn.ct.ex.shapes">>, <<"key">>, false, false},
    ?assertEqual(ok, call(shapes, {amqp_publish, Publish, {amqp_msg, Props, <<"body">>}})),
    ?assertMatch({ok, {{'basic.get_ok', _Tag, false, <<"mn.ct.ex.shapes">>, <<"key">>, 0},
                       {amqp_msg, Props, <<"body">>}}},
                 amqp(shapes, basic_get(<<"mn.ct.q.shapes">>))),
    ?assertEqual({ok, {'queue.purge_ok', 0}},
                 amqp(shapes, {'queue.purge', 0, <<"mn.ct.q.shapes">>, false})),
    ?assertEqual({ok, ok}, amqp(shapes, {'queue.declare', 0, <<"mn.ct.q.nowait">>, false, false,
                                         false, true, true, []})),
    ?assertEqual({ok, {'queue.delete_ok', 0}}, amqp(shapes, queue_delete(<<"mn.ct.q.shapes">>))).

%% A method the broker refuses closes the channel only, as amqp_client's
%% call exits; the next request gets a new channel.
refused_method_keeps_the_pool(_Config) ->
    start(refused, 1, #{}),
    Passive = {'exchange.declare', 0, <<"mn.ct.no.such">>, <<"direct">>, true, false, false,
               false, false, []},
    ?assertMatch({exit, {shutdown, {server_initiated_close, 404, <<"NOT_FOUND", _/binary>>}}},
                 amqp(refused, Passive)),
    topology(refused, <<"mn.ct.ex.refused">>, <<"mn.ct.q.refused">>, []),
    ok = mongoose_wpool:cast(rabbit, global, refused, publish(<<"mn.ct.ex.refused">>, <<"after">>)),
    ?assertEqual([<<"after">>], read_n(refused, <<"mn.ct.q.refused">>, 1)).

%% A full queue that rejects publishes makes the broker nack.
nack_is_counted(_Config) ->
    start(nack, 1, #{confirms_enabled => true}),
    Args = [{<<"x-max-length">>, long, 1}, {<<"x-overflow">>, longstr, <<"reject-publish">>}],
    topology(nack, <<"mn.ct.ex.nack">>, <<"mn.ct.q.nack">>, Args),
    [ok = mongoose_wpool:cast(rabbit, global, nack, publish(<<"mn.ct.ex.nack">>, P))
     || P <- payloads(1, 3)],
    wait_until(fun() -> rabbit_stat(nack, nacked) =:= 2 end),
    ?assertEqual(1, rabbit_stat(nack, published)),
    ?assertEqual({error, nack}, call(nack, publish(<<"mn.ct.ex.nack">>, <<"4">>))),
    ?assertEqual([<<"1">>], drain(nack, <<"mn.ct.q.nack">>)).

%% Casts faster than one worker's confirmed publishes: past
%% max_worker_queue_len the oldest waiting are dropped, the newest kept.
queue_bound_drops_oldest(_Config) ->
    start(bound, 1, #{confirms_enabled => true, max_worker_queue_len => 5}),
    topology(bound, <<"mn.ct.ex.bound">>, <<"mn.ct.q.bound">>, []),
    N = 2000,
    [ok = mongoose_wpool:cast(rabbit, global, bound, publish(<<"mn.ct.ex.bound">>, P))
     || P <- payloads(1, N)],
    wait_idle(bound),
    Got = [binary_to_integer(P) || P <- drain(bound, <<"mn.ct.q.bound">>)],
    Dropped = rabbit_stat(bound, dropped),
    ct:pal("~p of ~p published, ~p dropped", [length(Got), N, Dropped]),
    ?assert(Dropped > 0),
    ?assertEqual(N, Dropped + length(Got)),
    ?assertEqual(N, lists:last(Got)),
    ?assertEqual(lists:usort(Got), Got).

rabbitmqctl(Args) ->
    Out = os:cmd("rabbitmqctl " ++ Args ++ " 2>&1; echo rc=$?"),
    ?assertNotEqual(nomatch, string:find(Out, "rc=0"), Out),
    Out.

%% A memory alarm (a watermark of 1 byte) makes the broker block publishing
%% connections: the worker's channel stalls, the confirm window fills, and
%% past max_worker_queue_len the oldest waiting casts are dropped; once the
%% alarm clears, everything kept arrives, the newest included.
stalled_channel_drops_oldest(_Config) ->
    start(stall, 1, #{confirms_enabled => true, max_worker_queue_len => 10}),
    topology(stall, <<"mn.ct.ex.stall">>, <<"mn.ct.q.stall">>, []),
    Old = hd(string:split(rabbitmqctl("eval 'vm_memory_monitor:get_vm_memory_high_watermark().'"),
                          "\n")),
    N = 1000,
    try
        rabbitmqctl("set_vm_memory_high_watermark absolute 1"),
        ok = mongoose_wpool:cast(rabbit, global, stall, publish(<<"mn.ct.ex.stall">>, <<"1">>)),
        Blocked = fun() ->
                          [{1, W}] = rabbit_stat(stall, workers),
                          proplists:get_value(blocked, W)
                  end,
        wait_until(Blocked),
        [ok = mongoose_wpool:cast(rabbit, global, stall, publish(<<"mn.ct.ex.stall">>, P))
         || P <- payloads(2, N)],
        wait_until(fun() -> rabbit_stat(stall, dropped) > 0 end)
    after
        rabbitmqctl("set_vm_memory_high_watermark " ++ Old)
    end,
    wait_idle(stall),
    Got = [binary_to_integer(P) || P <- drain(stall, <<"mn.ct.q.stall">>)],
    Dropped = rabbit_stat(stall, dropped),
    ct:pal("~p of ~p published, ~p dropped", [length(Got), N, Dropped]),
    ?assertEqual(N, Dropped + length(Got)),
    ?assertEqual(N, lists:last(Got)),
    ?assertEqual(lists:usort(Got), Got).

close_all_connections() ->
    Out = os:cmd("rabbitmqctl close_all_connections 'mongoose_native test' 2>&1; echo rc=$?"),
    ?assertNotEqual(nomatch, string:find(Out, "rc=0"), Out).

%% The broker closes every connection while publishes (with confirms) are
%% under way: the workers reconnect, declare their exchange again (deleted
%% meanwhile, as a restart takes a non-durable one), and every publish
%% arrives at least once.
reconnect_redeclares_and_loses_nothing(_Config) ->
    start(pub, 2, #{confirms_enabled => true}),
    start(side, 1, #{}),
    Ex = <<"mn.ct.ex.restart">>,
    Q = <<"mn.ct.q.restart">>,
    topology(pub, Ex, Q, []),
    ?assertEqual({ok, {'exchange.delete_ok'}}, amqp(side, exchange_delete(Ex))),
    close_all_connections(),
    Passive = {'exchange.declare', 0, Ex, <<"fanout">>, true, false, false, false, false, []},
    wait_until(fun() -> amqp(side, Passive) =:= {ok, {'exchange.declare_ok'}} end),
    ?assertEqual({ok, {'queue.bind_ok'}}, amqp(side, queue_bind(Q, Ex))),
    %% Both of pub's lanes come back, each after its own jittered backoff.
    wait_until(fun() -> rabbit_stat(pub, reconnects) >= 2 end),
    Reconnects = rabbit_stat(pub, reconnects),
    N = 300,
    Closer = spawn_link(fun() -> timer:sleep(300), close_all_connections() end),
    [begin
         ok = mongoose_wpool:cast(rabbit, global, pub, publish(Ex, P)),
         timer:sleep(5)
     end || P <- payloads(1, N)],
    MRef = monitor(process, Closer),
    receive {'DOWN', MRef, process, Closer, _} -> ok end,
    Got = lists:usort(read_n(side, Q, N)),
    ?assertEqual(lists:sort(payloads(1, N)), Got),
    ?assert(rabbit_stat(pub, reconnects) > Reconnects),
    ?assertEqual(0, rabbit_stat(pub, failed)),
    ct:pal("rabbit stats: ~p", [proplists:get_value(rabbit, mongoose_wpool:stats(rabbit, global, pub))]).

bad_credentials(_Config) ->
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(rabbit, global, creds, [{workers, 1}],
                             #{host => "127.0.0.1", password => ?CANARY}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"outgoing_pools.rabbit.creds.connection.username">>)),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"outgoing_pools.rabbit.creds.connection.password">>)),
    ?assertEqual(nomatch, binary:match(Msg, ?CANARY)),
    {error, {connect_failed, Msg2}} =
        mongoose_wpool:start(rabbit, global, creds2, [{workers, 1}],
                             [{amqp_host, "127.0.0.1"}, {amqp_username, "nobody"}]),
    ?assertNotEqual(nomatch, binary:match(Msg2, <<"connection.amqp_username">>)).

bad_vhost(_Config) ->
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(rabbit, global, vhost, [{workers, 1}],
                             #{host => "127.0.0.1", virtual_host => <<"mn_no_such_vhost">>}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"outgoing_pools.rabbit.vhost.connection.virtual_host">>)).

unreachable_broker(_Config) ->
    {error, {connect_failed, Msg}} =
        mongoose_wpool:start(rabbit, global, down, [{workers, 1}], #{host => "127.0.0.1", port => 1}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"127.0.0.1:1">>)).

bad_config(_Config) ->
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.rabbit.bad.connection.amqp_port: "
                                            "expected an integer between 1 and 65535, got <<\"5672\">>">>}},
                 mongoose_wpool:start(rabbit, global, bad, [], #{amqp_port => <<"5672">>})),
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.rabbit.bad.connection.confirms_enabled: "
                                            "expected a boolean, got yes">>}},
                 mongoose_wpool:start(rabbit, global, bad, [], #{confirms_enabled => yes})),
    ?assertEqual({error, {invalid_config, <<"outgoing_pools.rabbit.bad.connection.max_worker_queue_len: "
                                            "expected a non-negative integer or \"infinity\", got -1">>}},
                 mongoose_wpool:start(rabbit, global, bad, [], #{max_worker_queue_len => -1})),
    {error, {invalid_config, Pass}} =
        mongoose_wpool:start(rabbit, global, bad, [], #{password => {?CANARY}}),
    ?assertEqual(nomatch, binary:match(Pass, ?CANARY)),
    {error, {invalid_config, Both}} =
        mongoose_wpool:start(rabbit, global, bad, [], #{host => "a", amqp_host => "b"}),
    ?assertNotEqual(nomatch, binary:match(Both, <<"amqp_host and host">>)).

malformed_requests(_Config) ->
    start(malformed, 1, #{}),
    [?assertMatch({error, {bad_request, _}}, call(malformed, R))
     || R <- [hello, {amqp_call, nope}, {amqp_call, {'exchange.declare', 0}},
              {amqp_call, {'queue.declare', 0, 5, false, false, false, false, false, []}},
              {amqp_call, {'queue.declare', 0, <<"q">>, false, false, false, false, false,
                           [{<<"x">>, nosuchtype, 1}]}},
              {amqp_publish, {'basic.publish', 0, <<>>, <<>>, false, true},
               mongoose_amqp:message(<<"x">>)},
              {amqp_publish, {'basic.publish', 0, <<>>, <<>>, false, false}, {amqp_msg, x, <<>>}}]],
    ?assertMatch({error, {bad_request, _}}, mongoose_wpool:cast(rabbit, global, malformed, {amqp_call})),
    ?assertEqual({ok, {'exchange.declare_ok'}},
                 amqp(malformed, exchange_declare(<<"mn.ct.ex.malformed">>, <<"direct">>))).
