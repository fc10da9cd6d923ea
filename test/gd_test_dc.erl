%% Runs on a datacenter's node (a `peer' of the common_test node): starts
%% the library, the shared redis pool and mod_global_distrib, and plays
%% clients: sessions are test processes that get
%% `{route, From, To, Acc, Packet}' messages (the adapter's standalone
%% router), stanzas are routed as a local client's would be.
-module(gd_test_dc).
-export([start/3, stop/0, connect/3, disconnect/2, send/3, send_many/4, jid/2, message/1,
         body/1, register_component/3, unregister_component/1, send_from_to/3,
         session/0, session_loop/0]).

-define(GLOBAL, <<"example.test">>).

%% RedisConn: the redis pool's connection options (one server's database,
%% or a cluster).
start(LocalHost, RedisConn, Opts) ->
    application:set_env(mongoose_native, hosts, [?GLOBAL, LocalHost]),
    {ok, _} = application:ensure_all_started(mongoose_native),
    {ok, _} = mongoose_wpool:start(redis, global, global_distrib, [{workers, 4}], RedisConn),
    mod_global_distrib:start(?GLOBAL, Opts).

stop() ->
    mod_global_distrib:stop(?GLOBAL).

jid(User, Resource) ->
    mod_global_distrib_adapter:make_jid(User, ?GLOBAL, Resource).

connect(User, Resource, Pid) ->
    mod_global_distrib_adapter:register_session(jid(User, Resource), Pid).

disconnect(User, Resource) ->
    mod_global_distrib_adapter:unregister_session(jid(User, Resource)).

message(Body) ->
    {xmlel, <<"message">>, [{<<"type">>, <<"chat">>}],
     [{xmlel, <<"body">>, [], [{xmlcdata, Body}]}]}.

body({xmlel, <<"message">>, _, [{xmlel, <<"body">>, _, [{xmlcdata, Body}]} | _]}) -> Body;
body(_) -> undefined.

%% From {User, Resource} to a bare JID on the global host.
send({FromUser, FromRes}, ToUser, Body) ->
    From = jid(FromUser, FromRes),
    To = jid(ToUser, <<>>),
    Packet = message(Body),
    _ = mod_global_distrib_adapter:route(From, To, mod_global_distrib_adapter:new_acc(From, To, Packet),
                                         Packet),
    ok.

register_component(Domain, Pid, IsHidden) ->
    mod_global_distrib_adapter:register_component(Domain, Pid, IsHidden).

unregister_component(Domain) ->
    mod_global_distrib_adapter:unregister_component(Domain).

%% From and To as {User, Server, Resource}.
send_from_to({FU, FS, FR}, {TU, TS, TR}, Body) ->
    From = mod_global_distrib_adapter:make_jid(FU, FS, FR),
    To = mod_global_distrib_adapter:make_jid(TU, TS, TR),
    Packet = message(Body),
    _ = mod_global_distrib_adapter:route(From, To, mod_global_distrib_adapter:new_acc(From, To, Packet),
                                         Packet),
    ok.

%% A long-lived process on this node that routes a client's stanzas, as
%% its session process would in MongooseIM (one sending process, so one
%% connection per remote datacenter: their order holds). Asked with
%% `{send, ReplyTo, Ref, From, ToUser, Body}', it answers `{Ref, ok}'.
session() ->
    spawn(?MODULE, session_loop, []).

session_loop() ->
    receive
        {send, ReplyTo, Ref, From, ToUser, Body} ->
            ReplyTo ! {Ref, send(From, ToUser, Body)},
            session_loop()
    end.

%% N stanzas from one process, bodies 1..N.
send_many(From, ToUser, Prefix, N) ->
    [send(From, ToUser, <<Prefix/binary, (integer_to_binary(I))/binary>>) || I <- lists:seq(1, N)],
    ok.
