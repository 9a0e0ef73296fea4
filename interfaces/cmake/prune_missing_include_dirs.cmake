# The ROS 2 PyPI wheels export *__rosidl_generator_py (and other) targets whose
# INTERFACE_INCLUDE_DIRECTORIES point at the wheel build machine
# (/opt/python/cp311-cp311/...). CMake refuses imported targets with missing
# include dirs, so drop the ones that do not exist here. Harmless on a real ROS
# install, where every listed directory exists.
function(prune_missing_include_dirs)
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endforeach()
endfunction()
