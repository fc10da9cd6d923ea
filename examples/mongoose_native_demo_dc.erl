%% The demo's datacenters: runs on each datacenter's node, starts
%% mod_global_distrib there, and plays a user whose messages are printed.
-module(mongoose_native_demo_dc).
-export([start/2, connect/2, disconnect/1, send/3, metrics/0]).

-define(GLOBAL, <<"demo.example">>).

start(LocalHost, Port) ->
    persistent_term:put({?MODULE, local_host}, LocalHost),
    application:set_env(mongoose_native, hosts, [?GLOBAL, LocalHost]),
    {ok, _} = application:ensure_all_started(mongoose_native),
    {ok, _} = mongoose_wpool:start(redis, global, global_distrib, [{workers, 4}],
                                   #{database => 12}),
    mod_global_distrib:start(?GLOBAL,
                             #{global_host => ?GLOBAL, local_host => LocalHost,
                               hosts_refresh_interval => 300,
                               connections => #{endpoints => [{"127.0.0.1", Port}],
                                                endpoint_refresh_interval => 1,
                                                endpoint_refresh_interval_when_empty => 1},
                               redis => #{expire_after => 5, refresh_after => 2},
                               cache => #{jid_lifetime_seconds => 1}}).

jid(User, Resource) ->
    mod_global_distrib_adapter:make_jid(User, ?GLOBAL, Resource).

%% A session whose process prints what it receives, prefixed with Printer's
%% label (the printer lives on the demo's own node).
connect(User, Printer) ->
    Dc = persistent_term:get({?MODULE, local_host}),
    Pid = spawn(fun() -> session(User, Dc, Printer) end),
    ok = mod_global_distrib_adapter:register_session(jid(User, <<"demo">>), Pid),
    ok.

disconnect(User) ->
    mod_global_distrib_adapter:unregister_session(jid(User, <<"demo">>)).

session(User, Dc, Printer) ->
    receive
        {route, From, _To, _Acc, Packet} ->
            Printer ! {delivered, User, Dc, From, body(Packet)},
            session(User, Dc, Printer)
    end.

send(FromUser, ToUser, Body) ->
    From = jid(FromUser, <<"demo">>),
    To = jid(ToUser, <<>>),
    Packet = {xmlel, <<"message">>, [{<<"type">>, <<"chat">>}],
              [{xmlel, <<"body">>, [], [{xmlcdata, Body}]}]},
    _ = mod_global_distrib_adapter:route(From, To,
                                         mod_global_distrib_adapter:new_acc(From, To, Packet),
                                         Packet),
    ok.

body({xmlel, _, _, [{xmlel, <<"body">>, _, [{xmlcdata, B}]} | _]}) -> B;
body(_) -> undefined.

metrics() ->
    mod_global_distrib:metrics().
