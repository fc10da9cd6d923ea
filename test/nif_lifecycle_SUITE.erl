%% The NIF library across a stop of the application and a purge of its
%% module: the library stays mapped (its runtime threads may still run its
%% code), the VM survives, and loading again gives working pools.
-module(nif_lifecycle_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("stdlib/include/assert.hrl").

all() -> [pinned_from_the_start, purge_and_reload].

%% In a fresh VM, a load refused right after the pin (a bad runtime_threads)
%% leaves the library mapped. Without the pin the VM's dlclose unmaps it:
%% no thread has run its code yet, so glibc has no reason of its own to keep
%% it (once the runtime runs, its threads' TLS destructors keep it mapped
%% anyway, which is why purge_and_reload alone cannot see the pin).
pinned_from_the_start(_Config) ->
    {ok, Peer, _} = peer:start_link(#{connection => standard_io}),
    try
        ok = peer:call(Peer, code, add_paths, [code:get_path()]),
        ok = peer:call(Peer, application, load, [mongoose_native]),
        ok = peer:call(Peer, application, set_env, [mongoose_native, runtime_threads, -1]),
        ?assertEqual({error, on_load_failure},
                     peer:call(Peer, code, load_file, [mongoose_native_nif])),
        {ok, Maps} = peer:call(Peer, file, read_file, ["/proc/self/maps"]),
        ?assertNotEqual(nomatch, binary:match(Maps, <<"mongoose_native_nif.so">>))
    after
        peer:stop(Peer)
    end.

purge_and_reload(_Config) ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(redis, global, life, [{workers, 2}], #{}),
    {ok, <<"PONG">>} = mongoose_wpool:call(redis, global, life, {q, ["PING"]}),
    ok = application:stop(mongoose_native),
    %% Unload the library while the runtime's threads exist.
    true = code:delete(mongoose_native_nif),
    _ = code:purge(mongoose_native_nif),
    %% Free every resource of the library so nothing else holds it.
    [erlang:garbage_collect(P) || P <- processes()],
    timer:sleep(500),
    %% Its code stays mapped: the runtime's threads may still run it.
    {ok, Maps} = file:read_file("/proc/self/maps"),
    ?assertNotEqual(nomatch, binary:match(Maps, <<"mongoose_native_nif.so">>)),
    {module, mongoose_native_nif} = code:load_file(mongoose_native_nif),
    ok = mongoose_wpool:ensure_started(),
    ?assertEqual([], mongoose_wpool:get_pools()),
    {ok, _} = mongoose_wpool:start(redis, global, life, [{workers, 2}], #{}),
    ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, life, {q, ["PING"]})),
    mongoose_wpool:stop().
